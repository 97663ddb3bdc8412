"""Print pip constraints pinned from poetry.lock, for the running interpreter.

`poetry install` needs the index's per-version JSON pages; pip needs only the simple
index. The Makefile installs with `pip install -c <these constraints>`, so what pip
installs is exactly what poetry.lock says. Packages locked twice (different versions
per Python version) are chosen by their markers.
"""

import sys
import tomllib

from pip._vendor.packaging.markers import Marker  # pip's own copy: no extra install

with open(sys.argv[1] if len(sys.argv) > 1 else "poetry.lock", "rb") as handle:
    lock = tomllib.load(handle)

pins: dict[str, str] = {}
for package in lock["package"]:
    marker = package.get("markers")
    if isinstance(marker, dict):  # per-group markers: any group that applies will do
        marker = " or ".join(f"({m})" for m in marker.values())
    if marker and not Marker(marker).evaluate():
        continue
    name = package["name"]
    if name in pins and pins[name] != package["version"]:
        sys.exit(f"poetry.lock pins {name} twice for this interpreter")
    pins[name] = package["version"]

for name in sorted(pins):
    print(f"{name}=={pins[name]}")
