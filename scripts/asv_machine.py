"""Describe this machine to asv under a name of your choosing, with every field filled in.

``asv machine --machine NAME --yes`` records the name alone (asv 0.6 stores only the fields that
differ from its detected defaults, and none do), so a named machine's results carried no cpu, arch,
ram or os.  This stores asv's own detected values (``asv.machine.Machine.get_defaults``) under NAME
in asv's machine file (``~/.asv-machine.json``) through asv's ``MachineCollection``; a flag
overrides one field.  Needs asv only (the CI gate installs nothing else).

    python scripts/asv_machine.py NAME [--cpu TEXT] [--arch TEXT] [--ram TEXT] [--os TEXT] [--num_cpu N]
"""
from __future__ import annotations

import argparse
import sys

FIELDS = ("os", "arch", "cpu", "num_cpu", "ram")


def describe(name: str, **overrides) -> dict:
    """The machine description stored under ``name``: asv's detected fields, ``overrides`` applied."""
    from asv.machine import Machine, MachineCollection

    info = {**Machine.get_defaults(), **{k: str(v) for k, v in overrides.items() if v is not None}, "machine": name}
    missing = [field for field in FIELDS if not info.get(field)]
    if missing:
        flags = " ".join(f"--{field}" for field in missing)
        raise SystemExit(f"error: asv detected no {', '.join(missing)} here; pass {flags}")
    MachineCollection.save(name, info)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="asv machine NAME with cpu, arch, ram and os filled in")
    parser.add_argument("name", help="the machine name asv files results under (asv run --machine NAME)")
    for field in FIELDS:
        parser.add_argument(f"--{field}", default=None, help=f"override the detected {field}")
    args = parser.parse_args(argv)
    info = describe(args.name, **{field: getattr(args, field) for field in FIELDS})
    print(", ".join(f"{k}: {v}" for k, v in info.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
