"""Known-vulnerable dependencies: pip-audit over the installed environment (`make audit`, CI).

Exit 0 when every installed distribution was checked and none has a known
vulnerability; 1 when one has (each is listed with the versions that fix it); 2 when
some could not be checked, which is what happens when pip-audit cannot reach PyPI's
vulnerability data (the per-release JSON at pypi.org/pypi/NAME/VERSION/json) and it
reports "Dependency not found on PyPI" for everything. With --allow-unreachable that
case says so loudly and exits 0, so a CI machine without that data still runs the
tests; a vulnerability found always fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIP_AUDIT = Path(sys.executable).with_name("pip-audit")


def main(argv: list[str]) -> int:
    allow_unreachable = "--allow-unreachable" in argv
    result = subprocess.run(
        [str(PIP_AUDIT), "--local", "--skip-editable", "--progress-spinner", "off", "--format", "json", "--desc", "off"],
        capture_output=True, text=True,
    )  # fmt: skip
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(result.stdout + result.stderr, file=sys.stderr)
        print("audit: pip-audit did not produce a report", file=sys.stderr)
        return 2
    # Our own package (installed editable) is not on PyPI and is not a dependency.
    dependencies = [d for d in report.get("dependencies", []) if "editable" not in d.get("skip_reason", "")]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = len(dependencies) - len(skipped)
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    if vulnerable:
        return 1
    if skipped:
        reasons = sorted({d["skip_reason"].split(":")[0] for d in skipped})
        print(
            f"audit: {len(skipped)} of {len(dependencies)} installed distributions were NOT audited "
            f"({'; '.join(reasons)}): pip-audit could not get their vulnerability data.",
            file=sys.stderr,
        )
        for dep in skipped[:10]:
            print(f"  not audited: {dep['name']} {dep.get('version', '')}", file=sys.stderr)
        if allow_unreachable and audited == 0:
            print("audit: no vulnerability data reachable from this machine; the audit did not run.", file=sys.stderr)
            return 0
        return 2
    print(f"audit: {audited} distributions audited, no known vulnerability.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
