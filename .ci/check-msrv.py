#!/usr/bin/env python3
"""Checks the workspace's `rust-version` against what the build really needs.

Only one toolchain is installed here, so an old compiler cannot be tried. Instead:
- every dependency's own `rust-version` (from `cargo metadata`) must not exceed ours;
- language features the code uses set a floor (let chains in `if`/`while`: 1.88);
- std APIs newer than ours are caught by clippy's `incompatible_msrv` lint, which
  `.ci/run` runs with `-D warnings`.
"""
import json
import subprocess
import sys

# Language features in use and the release that stabilised them.
FEATURE_FLOORS = {"edition 2024": (1, 85), "let chains": (1, 88)}


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple((parts + [0, 0])[:2])


def main():
    meta = json.loads(
        subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--locked",
         "--filter-platform", "x86_64-unknown-linux-gnu"])
    )
    members = set(meta["workspace_members"])
    ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members}
    if len(ours) != 1 or None in ours:
        sys.exit(f"workspace members must share one rust-version, found {sorted(map(str, ours))}")
    declared = version(ours.pop())
    problems = []
    for name, floor in FEATURE_FLOORS.items():
        if declared < floor:
            problems.append(f"{name} needs Rust {floor[0]}.{floor[1]}")
    for p in meta["packages"]:
        needed = p.get("rust_version")
        if p["id"] not in members and needed and version(needed) > declared:
            problems.append(f"dependency {p['name']} {p['version']} needs Rust {needed}")
    shown = f"{declared[0]}.{declared[1]}"
    if problems:
        sys.exit(f"rust-version {shown} is too old:\n  " + "\n  ".join(problems))
    print(f"rust-version {shown} covers every dependency and language feature in use")


if __name__ == "__main__":
    main()
