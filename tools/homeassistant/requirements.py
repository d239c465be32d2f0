"""Print the PyPI requirements of the integrations the smartybridge test
Home Assistant sets up: the ones bootstrap always loads, the ones the test
configures, and every entity platform the MQTT integration forwards to,
with all their dependencies. Run with the venv's python after
`pip install homeassistant`; setup.sh installs what it prints."""

import ast
import json
import pathlib

from homeassistant import bootstrap
import homeassistant.components

CONFIGURED = ["api", "energy", "history", "mqtt", "onboarding", "recorder", "websocket_api"]

components = pathlib.Path(homeassistant.components.__file__).parent


def mqtt_platforms():
    """ENTITY_PLATFORMS of mqtt/const.py, read without importing MQTT."""
    tree = ast.parse((components / "mqtt" / "const.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ENTITY_PLATFORMS":
            return [e.attr.lower() for e in node.value.elts]
    raise SystemExit("mqtt/const.py has no ENTITY_PLATFORMS")


todo = [*bootstrap.CORE_INTEGRATIONS, *bootstrap.DEFAULT_INTEGRATIONS, *CONFIGURED, *mqtt_platforms()]
seen, requirements = set(), set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((components / domain / "manifest.json").read_text())
    requirements.update(manifest.get("requirements", []))
    # after_dependencies too: their modules are imported (mqtt imports hassio).
    todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
print("\n".join(sorted(requirements)))
