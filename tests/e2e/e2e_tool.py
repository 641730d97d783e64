#!/usr/bin/env python3
"""Helpers of the end-to-end harness (lib.sh): stats lines, phase waits, stored-image checks.

  e2e_tool.py free-port
  e2e_tool.py stats JSONL              -> "phase=.. iteration=.. max_iteration=.. ..." (last line)
  e2e_tool.py wait-phase JSONL PHASE SECONDS [PID]
        exit 0 once a line with that phase appears; 1 on timeout or when PID (migrate) ended first
  e2e_tool.py image DIR [--pattern ADDR BYTES PAGE]
        checks the image under DIR (MANIFEST found, every block digest=ok, block files the
        manifest's length, process state present) and, with --pattern, that the pattern_writer
        buffer [ADDR, ADDR+BYTES) in the image holds the pattern: page i holds (k + i) mod 256 for
        pages at or after the cursor and (k + 1 + i) mod 256 before it, at most one torn page.
  e2e_tool.py maps-lost BEFORE AFTER   -> the file-backed lines of maps BEFORE whose pages AFTER
        does not map from the same file at the same file offsets with the same permissions
        ("range perms path", one per line; neighbours the kernel merged count as kept)
  e2e_tool.py self-test                 -> the pattern and manifest checks on synthetic images

The manifest grammar is lib/src/migration/image_manifest.h's (version 1).
"""
import json
import os
import random
import socket
import sys
import tempfile
import time
import zlib


def fail(msg):
    print("e2e_tool: " + msg)
    sys.exit(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def read_stats(path):
    lines = []
    try:
        with open(path) as f:
            for raw in f:
                raw = raw.strip()
                if not raw.startswith("{"):
                    continue
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    pass  # a line being written right now
    except FileNotFoundError:
        pass
    return lines


def stats(path):
    lines = read_stats(path)
    if not lines:
        print("lines=0")
        return
    last = lines[-1]
    phases = []
    for l in lines:
        if not phases or phases[-1] != l.get("phase"):
            phases.append(l.get("phase"))
    out = {
        "lines": len(lines),
        "phase": last.get("phase"),
        "phases": ",".join(str(p) for p in phases),
        "iteration": last.get("iteration", 0),
        "max_iteration": max(l.get("iteration", 0) for l in lines),
        "max_throttle": max(l.get("throttle_percent", 0) for l in lines),
        "transferred_bytes": last.get("transferred_bytes", 0),
        "total_bytes": last.get("total_bytes", 0),
        "zero_pages": last.get("zero_pages", 0),
        "normal_pages": last.get("normal_pages", 0),
        "xbzrle_pages": last.get("xbzrle_pages", 0),
        "downtime_ms": last.get("downtime_ms", 0),
        "total_ms": last.get("total_ms", 0),
        "throughput_bps": last.get("throughput_bps", 0),
    }
    print(" ".join("%s=%s" % kv for kv in out.items()))


def wait_phase(path, phase, seconds, pid):
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        lines = read_stats(path)
        if any(l.get("phase") == phase for l in lines):
            return 0
        if pid:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                lines = read_stats(path)
                return 0 if any(l.get("phase") == phase for l in lines) else 1
        time.sleep(0.02)
    return 1


def parse_manifest(path):
    blocks = []
    info = {"blocks": blocks}
    with open(path) as f:
        text = f.read().splitlines()
    if not text or text[0] != "procmig-image 1":
        raise ValueError("MANIFEST does not start with 'procmig-image 1'")
    if text[-1] != "end":
        raise ValueError("MANIFEST does not end with 'end'")
    for line in text[1:-1]:
        parts = line.split(" ")
        key = parts[0]
        if key == "block":
            b = {"id": int(parts[1])}
            for kv in parts[2:]:
                k, _, v = kv.partition("=")
                b[k] = v
            b["start"] = int(b["start"], 16)
            b["length"] = int(b["length"])
            blocks.append(b)
        elif key in ("page_size", "channels", "iterations"):
            info[key] = int(parts[1])
        elif key == "process_state":
            info["process_state"] = int(parts[1])
        else:
            info[key] = parts[1:]
    return info


def find_manifests(root):
    found = []
    for d, _, files in os.walk(root):
        if "MANIFEST" in files and "/.tmp-" not in d:
            found.append(d)
    return found


class Image:
    def __init__(self, d):
        self.dir = d
        self.info = parse_manifest(os.path.join(d, "MANIFEST"))

    def read(self, addr, length):
        """Bytes [addr, addr+length) of the stored memory, or None where no block covers it."""
        out = bytearray()
        at = addr
        end = addr + length
        while at < end:
            blk = None
            for b in self.info["blocks"]:
                if b["start"] <= at < b["start"] + b["length"]:
                    blk = b
                    break
            if blk is None:
                return None, at
            n = min(end, blk["start"] + blk["length"]) - at
            with open(os.path.join(self.dir, "block-%d.bin" % blk["id"]), "rb") as f:
                f.seek(at - blk["start"])
                chunk = f.read(n)
            chunk += b"\0" * (n - len(chunk))  # a sparse tail reads as zeros
            out += chunk
            at += n
        return bytes(out), None


def check_pattern(mem, page):
    """Empty string if `mem` holds the pattern_writer invariant, else why not."""
    pages = len(mem) // page
    # d_i = value - i (mod 256): the pass that page i holds.
    torn = []
    d = []
    for i in range(pages):
        p = mem[i * page:(i + 1) * page]
        first = p[0]
        if p.count(first) == page:
            d.append((first - i) & 0xff)
            continue
        # A torn page: a prefix of the new value, then the old value (memset was interrupted).
        last = p[-1]
        cut = p.index(last)
        if p[:cut].count(first) != cut or p[cut:].count(last) != page - cut:
            return "page %d holds neither one byte nor a torn new/old pair" % i
        if ((first - last) & 0xff) != 1:
            return "page %d torn between %d and %d, not consecutive passes" % (i, first, last)
        torn.append(i)
        d.append(None)
    if len(torn) > 1:
        return "more than one torn page: %s" % torn[:5]
    known = [x for x in d if x is not None]
    if not known:
        return ""
    breaks = [i for i in range(1, pages)
              if d[i] is not None and d[i - 1] is not None and d[i] != d[i - 1]]
    if len(breaks) > 1:
        return "pattern breaks at pages %s (a snapshot has at most one cursor)" % breaks[:5]
    if breaks:
        i = breaks[0]
        if ((d[i - 1] - d[i]) & 0xff) != 1:
            return "pages before %d hold pass %d, after it pass %d: not k+1 then k" % (
                i, d[i - 1], d[i])
    if torn:
        t = torn[0]
        before = d[t - 1] if t > 0 else None
        after = d[t + 1] if t + 1 < pages else None
        if before is not None and after is not None and ((before - after) & 0xff) != 1:
            return "torn page %d is not at the cursor" % t
    return ""


def check_image(root, pattern):
    dirs = find_manifests(root)
    if len(dirs) != 1:
        fail("image: %d MANIFEST files under %s, want exactly 1" % (len(dirs), root))
    try:
        img = Image(dirs[0])
    except (OSError, ValueError) as e:
        fail("image: %s: %s" % (dirs[0], e))
    blocks = img.info["blocks"]
    if not blocks:
        fail("image: no blocks")
    total = 0
    for b in blocks:
        if b.get("digest") != "ok":
            fail("image: block %d (%s) digest=%s, want ok" % (b["id"], b.get("name"), b.get("digest")))
        path = os.path.join(img.dir, "block-%d.bin" % b["id"])
        if not os.path.exists(path) or os.path.getsize(path) != b["length"]:
            fail("image: %s missing or not %d bytes" % (path, b["length"]))
        total += b["length"]
    if not img.info.get("process_state"):
        fail("image: empty process state")
    msg = "image %s: %d blocks, %d bytes, all digests ok, iterations %s" % (
        img.dir, len(blocks), total, img.info.get("iterations"))
    if pattern:
        addr, length, page = (int(x, 0) for x in pattern)
        mem, hole = img.read(addr, length)
        if mem is None:
            fail("image: pattern buffer byte 0x%x is in no block" % hole)
        why = check_pattern(mem, page)
        if why:
            fail("image: pattern_writer buffer: " + why)
        msg += "; pattern_writer buffer (%d pages) holds the pattern" % (length // page)
    print(msg)


def parse_maps(text):
    """/proc/PID/maps lines -> [(start, end, perms, offset, inode, path)], file-backed only."""
    out = []
    for line in text.splitlines():
        f = line.split(None, 5)
        if len(f) < 6 or not f[5].startswith("/"):
            continue
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        out.append((lo, hi, f[1], int(f[2], 16), f[4], f[5]))
    return out


def maps_lost(before, after):
    """The BEFORE file mappings some page of which AFTER does not map the same way."""
    lost = []
    for (lo, hi, perms, off, inode, path) in parse_maps(before):
        addr = lo
        for (alo, ahi, aperms, aoff, ainode, apath) in parse_maps(after):
            if ahi <= addr or alo > addr:
                continue
            if (aperms, ainode, apath) != (perms, inode, path) or \
                    aoff + (addr - alo) != off + (addr - lo):
                break
            addr = min(ahi, hi)
            if addr == hi:
                break
        if addr != hi:
            lost.append("%x-%x %s %s" % (lo, hi, perms, path))
    return lost


def self_test():
    page = 64
    pages = 40

    def make(k, cursor, torn_at=None, cut=10):
        mem = bytearray()
        for i in range(pages):
            v = (k + 1 + i) & 0xff if i < cursor else (k + i) & 0xff
            p = bytearray([v]) * page
            if torn_at == i:
                p[:cut] = bytes([(k + 1 + i) & 0xff]) * cut
            mem += p
        return mem

    assert check_pattern(make(3, 17), page) == ""
    assert check_pattern(make(255, 0), page) == ""
    assert check_pattern(make(255, 39), page) == ""
    assert check_pattern(make(7, 17, torn_at=17), page) == ""
    bad = make(3, 17)
    bad[5 * page + 9] ^= 0x40
    assert check_pattern(bad, page) != ""
    bad = make(3, 17)
    bad[30 * page:31 * page] = bytes([(3 + 1 + 30) & 0xff]) * page  # a second break
    assert check_pattern(bad, page) != ""
    assert check_pattern(make(3, 17, torn_at=25), page) != ""  # torn away from the cursor
    bad = make(3, 17)
    bad[:page] = bytes([(3 + 2) & 0xff]) * page  # k+2 before the cursor
    assert check_pattern(bad, page) != ""

    # A synthetic image: two blocks covering the buffer, the second with a sparse tail.
    d = tempfile.mkdtemp()
    mem = make(9, 21)
    base = 0x10000
    with open(os.path.join(d, "MANIFEST"), "w") as f:
        f.write("procmig-image 1\npage_size 4096\niterations 3\nprocess_state 10 crc32c=0x0\n")
        f.write("block 1 start=0x%x length=%d flags=0x3 stored_pages=1 crc32c=0x0 digest=ok "
                "sent=- name=a\n" % (base, 20 * page))
        f.write("block 2 start=0x%x length=%d flags=0x3 stored_pages=1 crc32c=0x0 digest=ok "
                "sent=- name=b\n" % (base + 20 * page, 20 * page))
        f.write("end\n")
    with open(os.path.join(d, "block-1.bin"), "wb") as f:
        f.write(mem[:20 * page])
    with open(os.path.join(d, "block-2.bin"), "wb") as f:
        f.write(mem[20 * page:])
    img = Image(d)
    got, hole = img.read(base, len(mem))
    assert hole is None and got == bytes(mem)
    got, hole = img.read(base - 1, 2)
    assert got is None and hole == base - 1
    before = ("1000-3000 r--p 00007000 fe:00 42 /lib/a.so\n"
              "3000-4000 r--p 00009000 fe:00 42 /lib/a.so\n"
              "4000-5000 rw-p 0000a000 fe:00 42 /lib/a.so\n"
              "5000-6000 rw-p 00000000 00:00 0 \n"
              "6000-7000 rw-p 00000000 fe:00 43 /lib/b.so\n")
    merged = ("1000-4000 r--p 00007000 fe:00 42 /lib/a.so\n"
              "4000-5000 rw-p 0000a000 fe:00 42 /lib/a.so\n"
              "5000-7000 rw-p 00000000 00:00 0 \n")
    assert maps_lost(before, before) == []
    assert maps_lost(before, merged) == ["6000-7000 rw-p /lib/b.so"]
    split = merged.replace("1000-4000 r--p 00007000", "1000-2000 r--p 00007000 fe:00 42 /lib/a.so\n"
                           "2000-4000 r--p 00008000")
    assert maps_lost(before, split) == ["6000-7000 rw-p /lib/b.so"]
    shifted = merged.replace("1000-4000 r--p 00007000", "1000-4000 r--p 00006000")
    assert maps_lost(before, shifted)[:2] == ["1000-3000 r--p /lib/a.so", "3000-4000 r--p /lib/a.so"]
    holed = merged.replace("1000-4000 r--p", "1000-2000 r--p")
    assert maps_lost(before, holed)[:2] == ["1000-3000 r--p /lib/a.so", "3000-4000 r--p /lib/a.so"]
    print("self-test: pattern, image and maps checks pass on good input and catch 9 faults")


def main():
    if len(sys.argv) < 2:
        fail("usage: see the docstring")
    cmd = sys.argv[1]
    if cmd == "free-port":
        free_port()
    elif cmd == "stats":
        stats(sys.argv[2])
    elif cmd == "wait-phase":
        pid = sys.argv[5] if len(sys.argv) > 5 else None
        sys.exit(wait_phase(sys.argv[2], sys.argv[3], sys.argv[4], pid))
    elif cmd == "image":
        pattern = None
        if len(sys.argv) > 3 and sys.argv[3] == "--pattern":
            pattern = sys.argv[4:7]
        check_image(sys.argv[2], pattern)
    elif cmd == "maps-lost":
        with open(sys.argv[2]) as b, open(sys.argv[3]) as a:
            for line in maps_lost(b.read(), a.read()):
                print(line)
    elif cmd == "self-test":
        self_test()
    else:
        fail("unknown command " + cmd)


if __name__ == "__main__":
    main()
