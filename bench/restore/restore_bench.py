#!/usr/bin/env python3
"""restore_bench: issue 5's restore figures, measured by driving the real binaries.

For each size (64 MiB, 1 GiB, 4 GiB by default) a mem_workload filled with pseudo-random
(incompressible) bytes, every page touched, is
  live   migrated over loopback to `procmig receive --once --detach` (no --store): the receiver's
         restore time (start of the restore to every thread running), of which the process
         creation, the program's whole pause (first park at the source to every thread running
         here), the sender's downtime and ack wait (migrate --json), the migration's total time
         and the bytes on the wire;
  ckpt   checkpointed with `procmig checkpoint PID --to DIR` (DIR on tmpfs) and restored with
         `procmig restore DIR --detach`: the restore time it reports, and the command's wall time
         (which also reads the image and checks its crc32c);
  criu   when PROCMIG_CRIU names a criu binary: `criu dump` and `criu restore -d` of the same
         workload (started without the agent), images on tmpfs; wall times.
Every restored process is checked (SIGUSR2: the workload verifies all its pages and prints
CHECK PASS) and killed. Prints medians of --runs runs and /proc/loadavg with the figures; never
pass/fail.

  restore_bench [--sizes 64,1024,4096] [--runs 3] [--only live,ckpt,criu] [--tmp /dev/shm]
  restore_bench --profile 1024   # live runs with the receiver under perf trace / perf record
"""
import argparse
import ctypes
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOAD = ""  # --workload: examples/mem_workload

RESTORED_RE = re.compile(
    r"restored pid (\d+) \(host pid (-?\d+), [^)]*\), (\d+) thread\(s\), in ([\d.]+) ms "
    r"\(process created after ([\d.]+) ms\)(?:; program paused ([\d.]+) ms in all)?")
# The blob's own phase times (newer procmig only).
PHASES = ("fds", "unmap", "memory", "state", "threads", "ready")
PHASES_RE = re.compile(r"restorer: " + ", ".join(rf"{p} ([\d.]+)" for p in PHASES) + " ms")
WIRE_RE = re.compile(r"(\d+) channel\(s\), (\d+) iteration\(s\), (\d+) bytes in (\d+) ms")


class BenchError(Exception):
    pass


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise BenchError(f"timed out after {timeout} s waiting for {what}")


def file_has(path, pattern):
    try:
        with open(path, errors="replace") as f:
            m = re.search(pattern, f.read(), re.M)
            return m
    except FileNotFoundError:
        return None


def ppid_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return -1


class Run:
    """One scenario run: its scratch directory and every process it started."""

    def __init__(self, bench, tag):
        self.b = bench
        self.dir = tempfile.mkdtemp(prefix=f"restore-bench-{tag}-", dir=bench.args.tmp)
        self.procs = []
        self.restored = []  # host pids of restored processes, killed at the end
        self.log = os.path.join(self.dir, "stderr.log")

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, argv, stdout_name, env=None, new_session=False):
        env_all = dict(os.environ)
        env_all.update(env or {})
        with open(self.path(stdout_name), "wb") as out, open(self.log, "ab") as err:
            # stdin /dev/null and no other inherited fd: the agent refuses a program holding a
            # pipe to another process.
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=env_all, close_fds=True, start_new_session=new_session)
        self.procs.append(p)
        return p

    def run(self, argv, stdout_name, timeout):
        """Runs to completion; stdout and stderr in files (a restored process may inherit
        them, so never pipes we would wait on). Returns (exit code, wall seconds)."""
        t0 = time.monotonic()
        p = self.spawn(argv, stdout_name)
        try:
            code = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise BenchError(f"{os.path.basename(argv[0])} {argv[1]} took over {timeout} s")
        return code, time.monotonic() - t0

    def read(self, name):
        try:
            with open(self.path(name), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def start_workload(self, mib, agent=True):
        ctl = self.path("agent.ctl")
        argv = [WORKLOAD, "--mib", str(mib), "--fill", "random"]
        if agent:
            argv = [self.b.procmig, "run", "--log", self.path("agent.log"), "--"] + argv
        p = self.spawn(argv, "workload.out", env={"PROCMIG_CONTROL": ctl},
                       new_session=not agent)
        wait_for(lambda: file_has(self.path("workload.out"), r"^READY") or p.poll() is not None,
                 60 + mib / 100, "the workload's READY")
        if p.poll() is not None:
            raise BenchError(f"the workload exited {p.returncode} before READY")
        if agent:
            wait_for(lambda: os.path.exists(ctl), 10, "the agent's control socket")
        return p

    def check_restored(self, host_pid):
        """SIGUSR2: the restored workload checks every page and prints CHECK PASS/FAIL to its
        stdout, which the restore reopened (same file, same offset)."""
        if host_pid <= 0:
            raise BenchError("no host pid for the restored process")
        self.restored.append(host_pid)
        os.kill(host_pid, signal.SIGUSR2)
        m = wait_for(lambda: file_has(self.path("workload.out"), r"^CHECK (PASS|FAIL).*$"),
                     120, "the restored process's CHECK line")
        if m.group(1) != "PASS":
            raise BenchError(f"restored process: {m.group(0)}")
        return anon_huge_mib(host_pid)

    def close(self, keep=False):
        for pid in self.restored:
            parent = ppid_of(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            # The restored process, or the PID namespace's init that was its parent, becomes
            # our child once the receiver is gone (we are a subreaper): reap it.
            for p in (pid, parent):
                if p > 1:
                    reap(p)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if keep:
            print(f"  (kept {self.dir})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def anon_huge_mib(pid):
    """MiB of the process's anonymous memory mapped by transparent huge pages."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def reap(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not ours (still the receiver's, or already reaped)
        if r == pid:
            return
        time.sleep(0.01)


def phases(text):
    """The blob's phase times from a restore report, {} when the procmig does not print them."""
    m = PHASES_RE.search(text)
    return {f"ph_{p}": float(m.group(i + 1)) for i, p in enumerate(PHASES)} if m else {}


def phases_line(m):
    if "ph_memory" not in m:
        return ""
    return ("restorer phases: " + ", ".join(f"{p} {m['ph_' + p]:.1f}" for p in PHASES) + " ms")


def last_json(text):
    import json
    last = None
    for line in text.splitlines():
        if line.startswith("{"):
            last = line
    if last is None:
        return {}
    try:
        return json.loads(last)
    except ValueError:
        return {}


class Bench:
    def __init__(self, args):
        self.args = args
        self.procmig = args.procmig
        self.criu = os.environ.get("PROCMIG_CRIU", "")

    # ---- live migration to a restoring receiver
    def live_once(self, mib, wrap=None, trace_source=False):
        r = Run(self, f"live-{mib}")
        ok = False
        try:
            w = r.start_workload(mib)
            if trace_source:
                # The source's system calls through the final phase (perf trace -p).
                st = r.spawn(["perf", "trace", "-p", str(w.pid), "-o", r.path("source.txt")],
                             "source-trace.out")
                time.sleep(2)
            recv_argv = [self.procmig, "receive", "--listen", "127.0.0.1:0", "--once", "--detach"]
            rp = r.spawn((wrap(r) if wrap else []) + recv_argv, "receive.out")
            m = wait_for(lambda: file_has(r.path("receive.out"), r"^listening on (\S+)")
                         or rp.poll() is not None, 20, "the receiver's 'listening on'")
            if rp.poll() is not None:
                raise BenchError(f"receiver exited {rp.returncode}: {r.read('stderr.log')[-300:]}")
            addr = m.group(1)
            code, wall = r.run([self.procmig, "migrate", str(w.pid), "--to", addr, "--json"],
                               "migrate.out", 600)
            stats = last_json(r.read("migrate.out"))
            if trace_source:
                st.send_signal(signal.SIGINT)
                try:
                    st.wait(30)
                except subprocess.TimeoutExpired:
                    st.kill()
            try:
                rcode = rp.wait(60)
            except subprocess.TimeoutExpired:
                raise BenchError("the receiver did not exit within 60 s of the migration")
            out = r.read("receive.out")
            if code != 0 or stats.get("phase") != "done" or rcode != 0:
                raise BenchError(f"migrate exit {code}, phase {stats.get('phase')}, receiver "
                                 f"exit {rcode}: {r.read('stderr.log')[-400:]}")
            m = RESTORED_RE.search(out)
            if not m:
                raise BenchError(f"no 'restored pid' line from the receiver: {out[:300]}")
            wire = WIRE_RE.search(out)
            try:
                w.wait(30)  # the source exits after the ack
            except subprocess.TimeoutExpired:
                raise BenchError("the source did not exit after the ack")
            huge = r.check_restored(int(m.group(2)))
            res = {
                "huge_mib": huge,
                "restore_ms": float(m.group(4)),
                "created_ms": float(m.group(5)),
                "pause_ms": float(m.group(6) or 0),
                "downtime_ms": float(stats.get("downtime_ms", 0)),
                "ack_wait_ms": float(stats.get("ack_wait_ms", 0)),
                "total_ms": float(stats.get("total_ms", 0)),
                "wall_s": wall,
                "wire_mib": float(stats.get("transferred_bytes", 0)) / 1048576,
                "recv_mib": float(wire.group(3)) / 1048576 if wire else 0,
                "iterations": float(stats.get("iteration", 0)),
            }
            res.update(phases(out))
            ok = True
            return res, r
        finally:
            if not ok or not wrap:
                r.close(keep=not ok and self.args.keep)

    # ---- checkpoint to tmpfs, procmig restore
    def ckpt_once(self, mib):
        r = Run(self, f"ckpt-{mib}")
        ok = False
        try:
            w = r.start_workload(mib)
            img = r.path("image")
            code, ck_wall = r.run([self.procmig, "checkpoint", str(w.pid), "--to", img, "--json"],
                                  "checkpoint.out", 600)
            stats = last_json(r.read("checkpoint.out"))
            if code != 0:
                raise BenchError(f"checkpoint exit {code}: {r.read('stderr.log')[-400:]}")
            w.wait(30)
            code, rs_wall = r.run([self.procmig, "restore", img, "--detach"], "restore.out", 300)
            if code != 0:
                raise BenchError(f"restore exit {code}: {r.read('stderr.log')[-400:]}")
            m = RESTORED_RE.search(r.read("stderr.log"))
            if not m:
                raise BenchError("no 'restored pid' line from procmig restore")
            host = int(r.read("restore.out").split()[0])
            huge = r.check_restored(host)
            ok = True
            res = {
                "huge_mib": huge,
                "ckpt_wall_s": ck_wall,
                "ckpt_downtime_ms": float(stats.get("downtime_ms", 0)),
                "restore_ms": float(m.group(4)),
                "created_ms": float(m.group(5)),
                "restore_wall_ms": rs_wall * 1000,
            }
            res.update(phases(r.read("stderr.log")))
            return res
        finally:
            r.close(keep=not ok and self.args.keep)

    # ---- CRIU
    def criu_once(self, mib):
        r = Run(self, f"criu-{mib}")
        ok = False
        try:
            w = r.start_workload(mib, agent=False)
            img = r.path("image")
            os.mkdir(img)
            code, dump_wall = r.run([self.criu, "dump", "-t", str(w.pid), "-D", img,
                                     "--shell-job", "-o", "dump.log", "-v2"], "criu-dump.out",
                                    600)
            if code != 0:
                raise BenchError(f"criu dump exit {code}: " + (r.read("image/dump.log")[-300:]
                                 or r.read("stderr.log")[-300:]).strip())
            w.wait(30)
            pidfile = r.path("restored.pid")
            code, rs_wall = r.run([self.criu, "restore", "-D", img, "--shell-job", "-d",
                                   "--pidfile", pidfile, "-o", "restore.log", "-v2"],
                                  "criu-restore.out", 300)
            if code != 0:
                raise BenchError(f"criu restore exit {code}: " + (
                    r.read("image/restore.log")[-300:] or r.read("stderr.log")[-300:]).strip())
            r.check_restored(int(r.read("restored.pid").split()[0]))
            ok = True
            return {"dump_ms": dump_wall * 1000, "restore_ms": rs_wall * 1000}
        finally:
            r.close(keep=not ok and self.args.keep)

    def series(self, fn, mib, label):
        runs = []
        for i in range(self.args.runs):
            try:
                res = fn(mib)
                runs.append(res[0] if isinstance(res, tuple) else res)
            except BenchError as e:
                print(f"  {label:<5} run {i + 1} did not complete: {e}")
            sys.stdout.flush()
        if not runs:
            return None
        keys = set.intersection(*(set(r) for r in runs))
        return {k: statistics.median(r[k] for r in runs) for k in keys}, len(runs)

    def size(self, mib):
        only = self.args.only.split(",")
        print(f"{mib} MiB (random content, every page touched), {self.args.runs} run(s) each, "
              f"medians; loadavg before: {loadavg()}")
        sys.stdout.flush()
        if "live" in only:
            s = self.series(lambda m: self.live_once(m), mib, "live")
            if s:
                m, n = s
                print(f"  live  runs {n}: restore {m['restore_ms']:.1f} ms (process created after "
                      f"{m['created_ms']:.1f} ms); program paused {m['pause_ms']:.1f} ms in all "
                      f"= sender downtime {m['downtime_ms']:.0f} ms + ack wait "
                      f"{m['ack_wait_ms']:.0f} ms")
                print(f"        migration total {m['total_ms'] / 1000:.2f} s (migrate wall "
                      f"{m['wall_s']:.2f} s), on the wire {m['wire_mib']:.1f} MiB "
                      f"(receiver counted {m['recv_mib']:.1f}), iterations {m['iterations']:.0f}; "
                      f"restored process has {m['huge_mib']:.0f} MiB in huge pages")
                if phases_line(m):
                    print(f"        {phases_line(m)}")
        if "ckpt" in only:
            s = self.series(self.ckpt_once, mib, "ckpt")
            if s:
                m, n = s
                print(f"  ckpt  runs {n}: procmig restore {m['restore_ms']:.1f} ms (process "
                      f"created after {m['created_ms']:.1f} ms); command wall "
                      f"{m['restore_wall_ms']:.0f} ms (reads and checks the image); checkpoint "
                      f"wall {m['ckpt_wall_s']:.2f} s (downtime {m['ckpt_downtime_ms']:.0f} ms); "
                      f"{m['huge_mib']:.0f} MiB in huge pages")
                if phases_line(m):
                    print(f"        {phases_line(m)}")
        if "criu" in only:
            if not self.criu:
                print("  CRIU: skipped (set PROCMIG_CRIU)")
            else:
                s = self.series(self.criu_once, mib, "criu")
                if s:
                    m, n = s
                    print(f"  criu  runs {n}: criu dump {m['dump_ms']:.0f} ms, criu restore -d "
                          f"{m['restore_ms']:.0f} ms (wall times, images on {self.args.tmp})")
        print(f"  loadavg after: {loadavg()}")
        sys.stdout.flush()

    # ---- where the restore time goes
    def profile(self, mib):
        """One live run with the receiver under `perf trace` (every system call of the receiver,
        the init and the restored process, with durations), then one under `perf record`
        (where its CPU time goes). Prints a timeline of the end of the migration."""
        perf = shutil.which("perf")
        if not perf:
            print("profile: perf is not installed")
            return
        print(f"profile: {mib} MiB, live; receiver under perf trace (times inflated by tracing)")
        try:
            res, r = self.live_once(mib, lambda r: [perf, "trace", "-o", r.path("trace.txt"),
                                                    "--"], trace_source=True)
            try:
                print(f"  reported: restore {res['restore_ms']:.1f} ms (created after "
                      f"{res['created_ms']:.1f} ms), paused {res['pause_ms']:.1f} ms in all, "
                      f"sender downtime {res['downtime_ms']:.0f} + ack wait "
                      f"{res['ack_wait_ms']:.0f} ms")
                time.sleep(0.5)  # perf trace writes its last lines after the receiver exits
                if self.args.profile_out:
                    shutil.copy(r.path("trace.txt"), self.args.profile_out + ".trace")
                for line in trace_timeline(r.read("trace.txt")):
                    print("  " + line)
                for line in source_longest(r.read("source.txt")):
                    print("  " + line)
            finally:
                r.close()
        except BenchError as e:
            print(f"  did not complete: {e}")
        print(f"profile: {mib} MiB, live; receiver under perf record (CPU samples at 999 Hz)")
        try:
            data = os.path.join(self.args.tmp, f"restore-bench-perf-{os.getpid()}.data")
            res, r = self.live_once(mib, lambda r: [perf, "record", "-F", "999", "-o", data,
                                                    "--"])
            r.close()
            print(f"  reported: restore {res['restore_ms']:.1f} ms (created after "
                  f"{res['created_ms']:.1f} ms), paused {res['pause_ms']:.1f} ms in all, "
                  f"sender downtime {res['downtime_ms']:.0f} + ack wait "
                  f"{res['ack_wait_ms']:.0f} ms")
            time.sleep(0.5)
            rep = subprocess.run([perf, "report", "-i", data, "--no-children", "--stdio", "-n",
                                  "--sort", "comm,dso,sym", "-g", "none", "--percent-limit",
                                  "0.5"],
                                 capture_output=True, text=True, timeout=300).stdout
            samples = subprocess.run([perf, "script", "-i", data, "-F", "tid,time,ip,sym"],
                                     capture_output=True, text=True, timeout=300).stdout
            if self.args.profile_out:
                shutil.copy(data, self.args.profile_out + ".perf.data")
            os.unlink(data)
            print("  samples (1 sample ~ 1 ms of CPU) by command, object, symbol:")
            shown = 0
            for line in rep.splitlines():
                if line.strip() and not line.startswith("#") and shown < 12:
                    print("    " + " ".join(line.split())[:140])
                    shown += 1
            for line in end_of_stream_cpu(samples):
                print("  " + line)
        except (BenchError, subprocess.TimeoutExpired) as e:
            print(f"  did not complete: {e}")


def source_longest(text):
    """The source's longest system calls (perf trace -p of the migrated program)."""
    calls = []
    pending = {}
    for line in text.splitlines():
        m = PENDING_RE.match(line)
        if m:
            pending[int(m.group(1))] = m.group(2)
            continue
        m = TRACE_RE.match(line)
        if m:
            calls.append((float(m.group(2) or 0), float(m.group(1)), m.group(5), m.group(6)))
            continue
        m = CONTINUED_RE.match(line)
        if m:
            calls.append((float(m.group(2)), float(m.group(1)), m.group(4),
                          pending.pop(int(m.group(3)), "")))
    if not calls:
        return ["source: no trace"]
    skip = ("futex", "poll", "ppoll", "epoll_wait", "clock_nanosleep", "nanosleep", "wait4",
            "rt_sigtimedwait", "rt_sigsuspend", "accept4", "read", "io_uring_enter")
    work = sorted((c for c in calls if c[2] not in skip), reverse=True)[:5]
    return ["source (the migrated program and its agent), the longest calls that do work:"] + [
        f"    {d:7.1f} ms at {t:.1f} {name}({args[:80]})" for d, t, name, args in work]


def end_of_stream_cpu(script):
    """From `perf script -F tid,time,ip,sym`: on the thread that read the stream (the most
    _copy_to_iter samples), the CPU samples after its last one, by symbol."""
    rows = []
    for line in script.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[1].endswith(":"):
            try:
                rows.append((int(parts[0]), float(parts[1][:-1]), parts[3].strip()))
            except ValueError:
                pass
    copies = {}
    for tid, _, sym in rows:
        if sym in ("_copy_to_iter", "copy_user_generic", "rep_movs_alternative"):
            copies[tid] = copies.get(tid, 0) + 1
    if not copies:
        return ["(no stream-reading thread found in the samples)"]
    tid = max(copies, key=copies.get)
    mine = [r for r in rows if r[0] == tid]
    last = max(t for t0, t, sym in mine if sym in ("_copy_to_iter", "copy_user_generic",
                                                    "rep_movs_alternative"))
    tail = [sym for _, t, sym in mine if t > last]
    by = {}
    for sym in tail:
        by[sym] = by.get(sym, 0) + 1
    top = ", ".join(f"{n} {sym[:60]}" for sym, n in sorted(by.items(), key=lambda kv: -kv[1])[:4])
    return [f"thread {tid} after its last stream copy: {len(tail)} samples: {top}"]


PENDING_RE = re.compile(r"^\s*[\d.]+ \(\s*\): \S+/(\d+) \w+\((.*)\s+\.\.\.\s*$")
CONTINUED_RE = re.compile(
    r"^\s*([\d.]+) \(\s*([\d.]+) ms\): \S+/(\d+)\s+\.\.\. \[continued\]: (\w+)\(\)\)\s*=\s*(\S+)")
TRACE_RE = re.compile(r"^\s*([\d.]+) \(\s*([\d.]*)\s*(?:ms)?\): (\S+)/(\d+) (\w+)\((.*)\)\s*=\s*(\S+)")


def trace_timeline(text):
    """The end of a live migration from a `perf trace` of the receiver: the receiving thread's
    last stream read, its silent (computing) stretch, the restore's system calls, the fork, and
    the restored process's own calls up to its report."""
    calls = []  # (start, duration, pid, name, args, return value)
    pending = {}  # pid -> the arguments of its call still blocked
    for line in text.splitlines():
        m = PENDING_RE.match(line)
        if m:
            pending[int(m.group(1))] = m.group(2)
            continue
        m = TRACE_RE.match(line)
        if m:
            calls.append((float(m.group(1)), float(m.group(2) or 0), int(m.group(4)),
                          m.group(5), m.group(6), m.group(7)))
            continue
        # A call that blocked is printed twice: "name(args ..." and, with its duration,
        # "... [continued]: name()) = ret".
        m = CONTINUED_RE.match(line)
        if m:
            calls.append((float(m.group(1)), float(m.group(2)), int(m.group(3)), m.group(4),
                          pending.pop(int(m.group(3)), ""), m.group(5)))
    out = []
    mounts = [c for c in calls if c[3] == "mount"]
    if not mounts:
        return ["no mount(): the restore did not run in a new PID namespace; no timeline"]
    init = mounts[0][2]
    init_clone = next((c for c in calls if c[3] == "clone3" and c[5] == str(init)), None)
    # (its "= 0" half in the child has no timestamp and is not parsed)
    if init_clone is None:
        return ["cannot find the clone3 that created the PID namespace's init"]
    recv = init_clone[2]
    # The restored process: the first new pid to make a call after init's mounts.
    seen = {c[2] for c in calls if c[0] < mounts[0][0]} | {init}
    restored_pid = next((c[2] for c in calls if c[0] > mounts[0][0] and c[2] not in seen), None)
    fork = [c for c in calls if c[2] == init and c[3] == "clone3" and c[1] > 0]
    rt = [c for c in calls if c[2] == recv and c[0] <= init_clone[0]]
    stream = [c for c in rt if c[3] == "io_uring_enter" or "socket:" in c[4]]
    last_io = stream[-1] if stream else rt[0]
    after = [c for c in rt if c[0] > last_io[0]]
    # CheckRestorable's read of /proc/self/maps: an openat, then reads of 8191 bytes (ifstream);
    # a live restore checks the premapped layout instead, and starts at its first stat() of a
    # mapped file.
    start = next((a for a, b in zip(after, after[1:])
                  if a[3] == "openat" and b[3] == "read" and "count: 8191" in b[4]), None)
    if start is None:
        start = next((c for c in after if c[3] == "newfstatat"), None)
    if start is None:
        return out + ["cannot find the restore's start (a read of /proc/self/maps or a stat())"]
    end_io = last_io[0] + last_io[1]
    out.append(f"receiving thread {recv}: last stream read ends at {end_io:.1f}; "
               f"{start[0] - end_io:.1f} ms until the restore starts at {start[0]:.1f} "
               f"({sum(c[1] for c in after if c[0] < start[0]):.1f} ms of it in system calls; "
               f"the rest is Receiver::Finish: crc32c of every block, digests)")
    stats = [c for c in rt if c[0] >= start[0] and c[3] == "newfstatat"]
    out.append(f"  restore: {len(stats)} stat() of mapped files (CheckRestorable) "
               f"from {stats[0][0] if stats else 0:.1f} to {stats[-1][0] if stats else 0:.1f}; "
               f"PID namespace init created at {init_clone[0]:.1f} "
               f"({init_clone[0] - start[0]:.1f} ms after the start)")
    restore_calls = [c for c in rt if c[0] >= start[0] and c[0] < init_clone[0]]
    if restore_calls:
        c = max(restore_calls, key=lambda c: c[1])
        out.append(f"  the receiver's longest call before init: {c[1]:.1f} ms {c[3]}({c[4][:80]})")
    if fork:
        f = max(fork, key=lambda c: c[1])
        out.append(f"  init's clone3 of the restored process (copies the receiver's page tables, "
                   f"every block included): {f[1]:.1f} ms")
    if restored_pid is None:
        return out + ["cannot find the restored process"]
    pc = [c for c in calls if c[2] == restored_pid]
    rep = next((c for c in pc if c[3] == "write"), None)
    end = rep[0] + rep[1] if rep else (pc[-1][0] if pc else 0)
    blob = [c for c in pc if c[0] <= end]
    if not blob:
        return out + ["no system calls of the restored process"]
    in_calls = sum(c[1] for c in blob)
    out.append(f"  restored process {restored_pid} (the blob): {end - blob[0][0]:.1f} ms from its "
               f"first call to its report (at {end:.1f}), {in_calls:.1f} ms in {len(blob)} "
               f"system calls:")
    by = {}
    for c in blob:
        n, t = by.get(c[3], (0, 0.0))
        by[c[3]] = (n + 1, t + c[1])
    for name, (n, t) in sorted(by.items(), key=lambda kv: -kv[1][1])[:6]:
        out.append(f"    {name:<14} {n:5} calls {t:8.1f} ms")
    out.append("  the longest calls:")
    for c in sorted(blob, key=lambda c: -c[1])[:4]:
        out.append(f"    {c[1]:7.1f} ms {c[3]}({c[4][:90]})")
        m = re.search(r"addr: 0x([0-9a-f]+), old_len: (\d+),.*new_addr: 0x([0-9a-f]+)", c[4])
        if c[3] == "mremap" and m and int(m.group(2)) >= (4 << 20):
            a, n, b = int(m.group(1), 16), int(m.group(2)), int(m.group(3), 16)
            huge = 2 << 20
            out.append(f"               {n >> 20} MiB from 0x{a:x} to 0x{b:x}: "
                       + ("congruent modulo 2 MiB" if a % huge == b % huge else
                          f"{(b - a) % huge:#x} off modulo 2 MiB (huge pages split, every "
                          f"page table entry moved)"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,1024,4096", help="MiB, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="live,ckpt,criu")
    ap.add_argument("--tmp", default="/dev/shm", help="scratch and image directory (tmpfs)")
    ap.add_argument("--procmig", required=True, help="the procmig binary (set by CMake)")
    ap.add_argument("--workload", required=True, help="examples/mem_workload (set by CMake)")
    ap.add_argument("--profile", type=int, metavar="MIB", help="profile one live restore")
    ap.add_argument("--profile-out", default="",
                    help="with --profile: keep the trace and perf data as PATH.trace/.perf.data")
    ap.add_argument("--keep", action="store_true", help="keep a failed run's directory")
    args = ap.parse_args()
    global WORKLOAD
    WORKLOAD = args.workload
    for path in (args.procmig, WORKLOAD):
        if not os.access(path, os.X_OK):
            print(f"restore_bench: {path} is not built")
            return 1
    # Restored processes (and their PID namespace's init) outlive the receiver that started
    # them: as a subreaper we can reap them instead of leaving zombies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    b = Bench(args)
    print(f"restore_bench: procmig {args.procmig}, scratch on {args.tmp}, "
          f"{os.cpu_count()} CPUs, loadavg {loadavg()}")
    if args.profile:
        b.profile(args.profile)
        return 0
    for mib in (int(s) for s in args.sizes.split(",")):
        b.size(mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
