"""Kubernetes' `$(VAR)` expansion for container `command`, `args` and `env` values.

Local pods run the user container's command the way the kubelet would: `$(NAME)` becomes the value of the
container environment variable NAME when it is defined and stays as written otherwise; `$$` is an escaped `$`
(so `$$(NAME)` yields the literal `$(NAME)`); any other `$` is kept. The host's environment is not consulted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand `$(NAME)` references in `text` from `env` with the kubelet's rules."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char != "$" or i + 1 == n:
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            close = text.find(")", i + 2)
            if close == -1:
                # An unterminated reference is copied through; scanning resumes after "$(".
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(env.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append("$")
            out.append(following)
            i += 2
    return "".join(out)


def expand_env(items: Iterable[tuple[str, str]], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Build a container environment in order: each value may refer to variables defined before it.

    `base` holds variables defined ahead of the list. A later entry with the same name replaces an earlier
    one, as in a Kubernetes pod spec.
    """
    env: dict[str, str] = dict(base or {})
    for name, value in items:
        env[name] = expand(value, env)
    return env
