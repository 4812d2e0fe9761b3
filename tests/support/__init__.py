"""Helpers for the test suite: real servers (:mod:`tests.support.servers`), no mocks."""
