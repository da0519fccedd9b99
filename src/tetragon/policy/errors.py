"""Errors of the policy engine: one line each, meant for the user who wrote the policy."""

from __future__ import annotations


class PolicyError(Exception):
    """A policy that cannot be parsed, validated, served by this kernel, or found.

    `kind` lets the gRPC layer pick a status code: "invalid" (bad YAML or schema), "unsupported"
    (valid, but this kernel lacks the hook or feature), "not_found", "exists".
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind
