"""Count test cases in a meson testlog.json: a test that ends with its own
"N passed, N failed" line counts as those N; any other counts as one."""
import json
import re
import sys

passed = failed = 0
with open(sys.argv[1]) as f:
    for line in f:
        t = json.loads(line)
        m = None
        for m in re.finditer(r"^(\d+) passed, (\d+) failed$", t.get("stdout", ""), re.M):
            pass
        ok = t["result"] == "OK"
        if m:
            p, fl = int(m.group(1)), int(m.group(2))
            if not ok and fl == 0:
                fl = 1          # the test died after its summary
            passed, failed = passed + p, failed + fl
        elif t["result"] == "SKIP":
            continue
        elif ok:
            passed += 1
        else:
            failed += 1
print(passed, failed)
