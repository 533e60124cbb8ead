"""The shipped rule set examples and the published JSON Schema stay valid and current, and
`recsys rules validate` refuses a broken file with the JSON path of each error (no services)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from recsys import cli as recsys_cli
from recsys.rules import cli as rules_cli
from recsys.rules.schema import json_schema, validate
from tests.conftest import make_cfg

CFG = make_cfg()
EXAMPLES = Path(CFG.rules.examples)
NAMES = ["brand-cap", "cart-margin-floor", "demo", "launch-weekend", "recalled-battery"]


def _load(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def test_the_examples_are_all_there():
    assert {p.stem for p in EXAMPLES.glob("*.json")} >= set(NAMES)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_example_validates_against_the_configured_surfaces(path):
    ruleset, errors = validate(json.loads(path.read_text()), list(CFG.surfaces.keys()))
    assert errors == [] and ruleset is not None and ruleset.rules


def test_the_examples_say_what_their_names_promise():
    launch = validate(_load("launch-weekend"), None)[0]
    pins = {r.sku: r for r in launch.rules}
    assert set(pins) == {"E000002", "E000005"} and {r.slot for r in pins.values()} == {1, 2}
    start, end = pins["E000002"].window.bounds()   # Berlin midnight = 23:00 UTC the day before (CET)
    assert start == datetime(2026, 12, 4, 23, tzinfo=timezone.utc).timestamp()
    assert end == datetime(2026, 12, 6, 23, tzinfo=timezone.utc).timestamp()

    block = validate(_load("recalled-battery"), None)[0].rules[0]
    assert block.kind == "block" and set(block.surfaces) == set(CFG.surfaces.keys())
    leaves = {leaf.field: leaf.op for leaf in block.filter.all}
    assert leaves["title"] == ("contains", "X21") and leaves["category"][0] == "in"
    # "Batteries" is the display label; the synthetic catalog's category column holds the keys
    assert {"Batteries", "phone_battery", "laptop_battery", "camera_battery"} <= set(leaves["category"][1])
    assert validate(_load("demo"), None)[0].rules[1].filter == block.filter   # the demo blocks the same items

    floor = validate(_load("cart-margin-floor"), None)[0].rules[0]
    assert (floor.kind, floor.surfaces, floor.margin, floor.at_least) == ("margin_floor", ["cart_upsell"], 0.35, 4)

    cap = validate(_load("brand-cap"), None)[0].rules[0]
    assert (cap.kind, cap.by, cap.max) == ("cap", "brand", 3) and set(cap.surfaces) == set(CFG.surfaces.keys())

    demo = validate(_load("demo"), None)[0]
    kinds = {r.kind: r for r in demo.rules}
    assert set(kinds) == {"cap", "block", "pin", "boost"}
    assert (kinds["pin"].sku, kinds["pin"].slot, kinds["pin"].window, kinds["pin"].surfaces) == \
        ("E000005", 1, None, ["homepage_hero"])
    assert (kinds["boost"].factor, kinds["boost"].surfaces, kinds["boost"].filter.op) == \
        (1.5, ["pdp_fbt"], ("contains", "accessory"))
    assert kinds["boost"].filter.field == "tags"


def test_the_published_schema_is_the_models_schema():
    """conf/rules/schema.json is `recsys rules schema --write`: regenerate it when the models change."""
    published = rules_cli.SCHEMA_PATH.read_text()
    assert json.loads(published) == json_schema()
    assert published == rules_cli.schema_text()


BROKEN = {"name": "broken", "rules": [
    {"id": "ok-cap", "kind": "cap", "label": "fine", "surfaces": ["homepage_hero"], "by": "brand", "max": 3},
    {"id": "bad-boost", "kind": "boost", "label": "x", "surfaces": ["homepage_hero"],
     "filter": {"all": [{"field": "brand", "eq": "Volt"}, {"field": "price", "contains": "cheap"}]}, "factor": 1.2},
    {"id": "bad-pin", "kind": "pin", "label": "y", "surfaces": ["nowhere"], "sku": "E000001", "slot": 0},
]}


def test_validate_refuses_a_broken_file_with_the_json_paths(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(BROKEN))
    assert rules_cli.main(["validate", str(path)], cfg=CFG) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "$.rules[1].filter.all[1]: 'contains' does not apply to 'price'" in text
    assert "$.rules[2].slot: " in text
    assert "OK" not in text


def test_validate_names_an_unknown_surface_by_path(tmp_path, capsys):
    body = {"name": "s", "rules": [{"id": "p", "kind": "pin", "label": "p", "surfaces": ["homepage_hero", "nowhere"],
                                    "sku": "E000001", "slot": 1}]}
    path = tmp_path / "surface.json"
    path.write_text(json.dumps(body))
    assert rules_cli.main(["validate", str(path)], cfg=CFG) == 1
    assert "$.rules[0].surfaces[1]: unknown surface 'nowhere'" in capsys.readouterr().err


def test_validate_refuses_what_is_not_json(tmp_path, capsys):
    path = tmp_path / "truncated.json"
    path.write_text('{"name": "t", "rules": [')
    assert rules_cli.main(["validate", str(path)], cfg=CFG) == 1
    assert "not JSON: line 1" in capsys.readouterr().err


def test_validate_through_the_recsys_entry_point(capsys):
    """`recsys rules validate FILE` as the shell runs it (recsys/cli.py's main, in process)."""
    assert recsys_cli.main(["rules", "validate", str(EXAMPLES / "demo.json")]) == 0
    assert "OK: 'demo', 4 rules" in capsys.readouterr().out


def test_the_rules_parser_knows_every_action():
    import argparse

    parser = argparse.ArgumentParser()
    rules_cli.register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["rules", "preview", "--surface", "pdp_fbt", "--sku", "E000001", "--version", "rules-v3"]).version == 3
    with pytest.raises(SystemExit):   # --version and --file are one or the other
        parser.parse_args(["rules", "preview", "--surface", "pdp_fbt", "--version", "3", "--file", "x.json"])
    assert set(rules_cli.ACTIONS) == {"validate", "create", "list", "show", "schema", "preview", "shadow", "report",
                                      "publish", "rollback", "archive", "audit"}


def test_preview_and_report_lines_read_side_by_side():
    item = lambda sku, source, notes=(): {"sku": sku, "source": source, "explain": {"rules": list(notes)}}  # noqa: E731
    result = {"request_id": "r1", "surface": "homepage_hero", "degraded": [],
              "live": {"rule_set_version": None, "items": [item("E000001", "two_tower"), item("E000002", "als")],
                       "rules": None},
              "draft": {"rule_set_version": "draft", "items": [item("E000005", "rules", ["pin-x: pinned at slot 1"]),
                                                               item("E000001", "two_tower")],
                        "rules": {"blocked": {"E000009": "recall"}, "unmet": {}, "inactive": {},
                                  "pins": {"pin-x": {"slot": 1, "honoured": True}}}}}
    lines = rules_cli.preview_lines(result)
    row = next(line for line in lines if line.lstrip().startswith("1 "))
    assert "E000001" in row and "E000005" in row and "draft: pin-x: pinned at slot 1" in row and "*" in row
    assert any("blocked E000009 (recall)" in line for line in lines)
    assert any("pin pin-x at slot 1: honoured" in line for line in lines)

    empty = {"label": "rules-v2", "runs": 0}
    assert "no shadow runs" in rules_cli.report_lines(empty)[1]
