"""Print the shell commands of the README's "Set up" section, one per line, in order.

.ci/run runs exactly these, so CI does what a newcomer does on a fresh clone and the README's
commands cannot drift from what is tested.
"""

import re
import sys

with open(sys.argv[1] if len(sys.argv) > 1 else "README.md", encoding="utf-8") as fh:
    text = fh.read()
section = re.search(r"^## Set up\n(.*?)(?=^## )", text, re.S | re.M)
if not section:
    sys.exit("README.md has no '## Set up' section")
for block in re.findall(r"^```\n(.*?)^```", section.group(1), re.S | re.M):
    print(" ".join(line.strip() for line in block.strip().splitlines()))
