// The ops dashboard's charts: data from the page's <script type="application/json"> blocks, drawn
// with the vendored Chart.js (vendor/chart.umd.min.js). No inline script: the page can run under a
// strict Content-Security-Policy (script-src 'self').
(function () {
  "use strict";
  function data(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }
  var palette = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d"];
  Chart.defaults.animation = false; // drawn at once: screenshots and slow machines see the final chart

  var funnel = data("funnel-data");
  if (funnel) {
    new Chart(document.getElementById("funnel-chart"), {
      type: "bar",
      data: {
        labels: funnel.map(function (row) { return row[0]; }),
        datasets: [{ label: "cases", data: funnel.map(function (row) { return row[1]; }), backgroundColor: palette }],
      },
      options: { indexAxis: "y", maintainAspectRatio: false, plugins: { legend: { display: false } },
                 scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  var recovery = data("recovery-data");
  if (recovery) {
    var currencies = Object.keys(recovery.series);
    new Chart(document.getElementById("recovery-chart"), {
      type: "line",
      data: {
        labels: recovery.days,
        datasets: currencies.map(function (cur, i) {
          return { label: cur, borderColor: palette[i % palette.length], tension: 0.2,
                   data: recovery.series[cur] };
        }),
      },
      options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true } } },
    });
  }

  // Purge cannot be undone: ask first (the server needs no confirmation, the person does).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
