#!/usr/bin/env python3
"""Validates the real --json outputs of ferry against docs/schemas/.

The table CASES has one line per command run: the schema file (one per
command, in docs/schemas/), the site it runs on, the command, and the
phase of tests/metrics/schemas.sh it belongs to (1: everything running;
2: site b killed, so that errors and nulls show).  Adding a --json
output = one schema file + one line here; the test fails for a command
that has `--json` in `ferry --help` but no line in the table.

Every output must validate, and must stop validating once an unknown key
is added to it (the schemas list every field: additionalProperties is
false), so that a field nobody documented fails here.

usage: schemas.py PHASE    (env: FERRY_BIN, POOL_A, POOL_B, POOL_C, SCHEMAS)"""
import copy
import json
import os
import re
import subprocess
import sys

import jsonschema

CASES = [
    # schema               site  command                                phase
    ("volume-list.json",   "a", "volume list --json",                    1),
    ("volume-list.json",   "c", "volume list --json",                    1),  # empty pool
    ("volume-info.json",   "a", "volume info db --json",                 1),
    ("snap-list.json",     "a", "snap list db --json",                   1),
    ("snap-list.json",     "a", "snap list logs --json",                 1),  # none
    ("snap-diff.json",     "a", "snap diff db@s1 db@s2 --json",          1),
    ("snap-diff.json",     "a", "snap diff db@s1 --json",                1),  # from creation
    ("export-list.json",   "a", "export list --json",                    1),
    ("export-list.json",   "c", "export list --json",                    1),
    ("export-sessions.json", "a", "export sessions --json",              1),
    ("export-sessions.json", "a", "export sessions db --json",           1),
    ("export-sessions.json", "c", "export sessions --json",              1),  # none
    ("pair-list.json",     "a", "pair list --json",                      1),
    ("pair-list.json",     "b", "pair list --json",                      1),
    ("pair-status.json",   "a", "pair status pv --json",                 1),
    ("pair-status.json",   "b", "pair status pv --json",                 1),
    ("pair-status.json",   "a", "pair status paused --json",             1),
    ("pair-verify.json",   "a", "pair verify paused --json",             1),  # no cycle runs under it
    ("pair-points.json",   "a", "pair points pv --json",                 1),
    ("pair-points.json",   "b", "pair points pv --json",                 1),
    ("group-list.json",    "a", "group list --json",                     1),
    ("group-list.json",    "c", "group list --json",                     1),  # none
    ("group-info.json",    "a", "group info grp --json",                 1),  # after a cut
    ("group-info.json",    "a", "group info grp2 --json",                1),  # no cut yet
    ("status.json",        "a", "status --json",                         1),
    ("status.json",        "b", "status --json",                         1),
    ("status.json",        "c", "status --json",                         1),
    ("pair-status.json",   "a", "pair status pv --json",                 2),  # peer gone
    ("pair-list.json",     "a", "pair list --json",                      2),
    ("status.json",        "a", "status --json",                         2),
    ("pair-points.json",   "a", "pair points pv --json",                 2),
]


def fail(msg):
    print("schemas: FAIL: " + msg, file=sys.stderr)
    return 1


def load_schema(path, cache={}):
    """The schema with its relative "$ref": "X.json" to sibling files inlined
    (so that no resolver API is needed: Debian's jsonschema is 4.10)."""
    if path in cache:
        return cache[path]
    with open(path) as f:
        s = json.load(f)

    def inline(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.endswith(".json") and "#" not in ref:
                sub = copy.deepcopy(load_schema(os.path.join(os.path.dirname(path), ref)))
                sub.pop("$schema", None)
                return sub
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node
    cache[path] = inline(s)
    return cache[path]


def with_unknown_key(doc):
    """doc with one undocumented key added somewhere an object is (None
    when it holds no object, e.g. an empty list)."""
    d = copy.deepcopy(doc)
    if isinstance(d, dict):
        d["undocumented_field"] = 1
        return d
    if isinstance(d, list) and d and isinstance(d[0], dict):
        d[0]["undocumented_field"] = 1
        return d
    return None


def json_commands(ferry):
    """'group verb' (or 'group') of every command whose usage has --json."""
    out = subprocess.run([ferry, "--help"], capture_output=True, text=True, check=True).stdout
    cmds = set()
    for line in out.splitlines():
        if "[--json]" not in line:
            continue
        words = []
        for w in line.split():
            if not re.match(r"^[a-z]+$", w):
                break
            words.append(w)
        cmds.add(" ".join(words))
    return cmds


def main():
    phase = int(sys.argv[1])
    ferry = os.environ["FERRY_BIN"]
    pools = {"a": os.environ["POOL_A"], "b": os.environ["POOL_B"], "c": os.environ["POOL_C"]}
    sdir = os.environ["SCHEMAS"]
    bad = checks = 0
    if phase == 1:
        # every --json command has a line, and every schema file is used
        run = [c.split() for _, _, c, _ in CASES]
        for cmd in sorted(json_commands(ferry)):
            checks += 1
            if not any(c[:len(cmd.split())] == cmd.split() for c in run):
                bad += fail("'ferry %s' has --json but no schema case in schemas.py" % cmd)
        for f in sorted(os.listdir(sdir)):
            if not f.endswith(".json"):
                continue
            checks += 1
            jsonschema.Draft202012Validator.check_schema(load_schema(os.path.join(sdir, f)))
            if f not in {c[0] for c in CASES}:
                bad += fail("docs/schemas/%s is not validated by any case" % f)
    for schema, site, cmd, ph in CASES:
        if ph != phase:
            continue
        checks += 1
        argv = [ferry, "--pool", pools[site]] + cmd.split()
        r = subprocess.run(argv, capture_output=True, text=True)
        # pair verify exits 1 on a mismatch; anything else is a failure
        if r.returncode != 0:
            bad += fail("%s (site %s): exit %d: %s" % (cmd, site, r.returncode, r.stderr.strip()))
            continue
        try:
            doc = json.loads(r.stdout)
        except ValueError as e:
            bad += fail("%s (site %s): not JSON (%s): %r" % (cmd, site, e, r.stdout[:200]))
            continue
        v = jsonschema.Draft202012Validator(load_schema(os.path.join(sdir, schema)))
        errs = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
        for e in errs[:5]:
            bad += fail("%s (site %s) against %s: at %s: %s" %
                        (cmd, site, schema, "/".join(map(str, e.path)) or "(top)", e.message))
        mutated = with_unknown_key(doc)
        if mutated is not None and v.is_valid(mutated):
            bad += fail("%s accepts an undocumented field" % schema)
        if not errs:
            print("ok: ferry %s (site %s) matches %s" % (cmd, site, schema))
    print("schemas phase %d: %d checks, %d failed" % (phase, checks, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
