"""Contracts between services: events, RPC requests and replies, as msgspec Structs.

One definition each; services import these, never each other.
"""
