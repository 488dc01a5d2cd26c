#!/usr/bin/env python3
"""Summarises heaptrack's folded stacks (`heaptrack_print -F`) by allocation site.

Usage: heap-report.py LEAKED_STACKS PEAK_STACKS [HEAPTRACK_SUMMARY]

A stack is charged to its *site*: the innermost frame that is not allocator, collection or
standard-library plumbing (so `Vec::push` inside `serde_json` counts for serde_json), to its
crate, and to the innermost frame of the operator itself (`secprov::`), which says which of
our code paths holds the memory.
"""
import re
import sys
from collections import Counter

PLUMBING = re.compile(
    r"^(<)?(alloc::|core::|std::|hashbrown::|__rust|__rdl|__rg_|malloc|calloc|realloc|"
    r"posix_memalign|aligned_alloc|operator new|_start|__libc|start_thread|clone3?|"
    r"bytes::|smallvec::|indexmap::|<T as |<&|\[unknown\]|\?\?)"
)


def demangle(frame: str) -> str:
    """Rust v0 symbols (`_R...`, which heaptrack leaves mangled) as `a::b::c (file)`: the
    length-prefixed identifiers in order, without disambiguator hashes. Good enough to tell
    crates and functions apart; other frames are returned as they are."""
    name, _, rest = frame.partition(" ")
    if not name.startswith("_R"):
        return frame
    name = re.sub(r"(?<=[CNXYMIB])s[0-9A-Za-z]*_", "", name[2:])
    idents, i = [], 0
    while i < len(name):
        if name[i].isdigit() and (i == 0 or not name[i - 1].isdigit()):
            j = i
            while j < len(name) and name[j].isdigit():
                j += 1
            n = int(name[i:j])
            ident = name[j : j + n]
            if n and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ident):
                idents.append(ident)
                i = j + n
                continue
        i += 1
    return "::".join(idents) + (f" {rest}" if rest else "")


OURS = re.compile(r"^secprov|\((app|cli|context|connect|events|execute|handle|health|leader|metadata|"
                  r"metrics|observe|ownership|patch|plan|reconcile|server|shard|snapshot|status|"
                  r"usage|client|wire|config|spec|scrub|http)\.rs\)")


def crate_of(frame: str) -> str:
    if "::" not in frame:
        # An inlined frame: only its function and file are known.
        return frame.split(" ", 1)[-1]
    f = frame.lstrip("<").lstrip("&")
    f = re.sub(r"^(dyn |impl |mut )", "", f)
    return re.split(r"::|<| ", f, maxsplit=1)[0] or frame


def short(frame: str, width: int = 110) -> str:
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    frame = re.sub(r"\{\{closure\}\}", "{closure}", frame)
    return frame if len(frame) <= width else frame[: width - 3] + "..."


def load(path):
    stacks = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, cost = line.rpartition(" ")
            try:
                cost = int(cost)
            except ValueError:
                continue
            if cost > 0:
                stacks.append(([demangle(f) for f in stack.split(";")], cost))
    return stacks


# Components of the operator, recognised by the innermost frame (nearest the allocation) that
# names one of their files or functions.
COMPONENTS = [
    ("batch snapshots (controller/snapshot.rs)", r"\(snapshot\.rs\)"),
    ("Events (controller/events.rs)", r"\(events\.rs\)"),
    ("per-object maps of the Context (controller/context.rs; also tokio's own context.rs: spawned tasks)", r"\(context\.rs\)"),
    ("metrics series (metrics.rs, prometheus-client)", r"\(metrics\.rs\)|\(family\.rs\)"),
    ("Secret usage tracking (controller/usage.rs)", r"\(usage\.rs\)"),
    ("trigger fingerprints (controller/fingerprints.rs; kube-runtime predicate_filter before)",
     r"\((fingerprints|predicate)\.rs\)"),
    ("reflector cache of SecurityProviders (kube-runtime store)", r"\((store|reflect)\.rs\)"),
    ("controller scheduler (kube-runtime, DelayQueue)", r"scheduler|delay_queue|schedule_message|pop_queue|\(runner\.rs\)"),
    ("watch events being decoded", r"event_decode|\(de\.rs\)"),
]


def component_of(frames):
    for frame in reversed(frames):
        for name, pattern in COMPONENTS:
            if re.search(pattern, frame):
                return name
    return "other"


def summarise(title, stacks, top=20):
    total = sum(c for _, c in stacks)
    by_site, by_crate, by_ours, by_component = Counter(), Counter(), Counter(), Counter()
    for frames, cost in stacks:
        inner = [f for f in reversed(frames) if f and not PLUMBING.match(f)]
        site = inner[0] if inner else frames[-1]
        by_site[short(site)] += cost
        by_crate[crate_of(site)] += cost
        ours = next((f for f in inner if OURS.search(f.lstrip("<"))), "(no operator frame)")
        by_ours[short(ours)] += cost
        by_component[component_of(frames)] += cost
    mib = lambda b: f"{b / 1048576:8.2f} MiB"
    print(f"\n## {title}: {mib(total)} in {len(stacks)} stacks\n")
    tables = (
        ("component", by_component),
        ("operator frame", by_ours),
        ("crate or file", by_crate),
        ("site", by_site),
    )
    for name, table in tables:
        print(f"\nby {name}:")
        for key, cost in table.most_common(top):
            print(f"  {mib(cost)} {100 * cost / max(total, 1):5.1f} %  {key}")


def main():
    leaked, peak = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        with open(sys.argv[3], errors="replace") as f:
            for line in f:
                if re.search(r"peak heap memory|peak RSS|total memory leaked|calls to allocation|temporary memory", line):
                    print(line.rstrip())
    summarise("at rest (still allocated when the operator was killed)", load(leaked))
    summarise("at the peak of heap use", load(peak))


if __name__ == "__main__":
    main()
