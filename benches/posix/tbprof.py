#!/usr/bin/env python3
"""Attribute guest instructions (TB executions x TB size) to symbols, within
the window between the first execution of BEGIN_PC and the next of END_PC.

usage: tbprof.py LOG BEGIN_PC END_PC SYMFILE...   (SYMFILE: `nm -n` output)

LOG is QEMU's `-icount shift=0 -d in_asm,exec,nochain -D LOG` (a FIFO works:
the log of a POSIX boot is gigabytes). BEGIN_PC/END_PC are two noinline
marker functions of a driver program linked away from busybox
(`musl-gcc -static -O2 -Wl,-Ttext-segment=0x50000000`), called around the
work to measure. Addresses below 0x800000 count as `busybox/prog`. How it
was used: docs/ARCHITECTURE.md section 22 ("Where issue 17's workloads
spend")."""
import sys, re, bisect, collections
log, begin, end = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3], 16)
syms = []
for f in sys.argv[4:]:
    tag = f.split('/')[-1].replace('.nm', '')
    for line in open(f):
        p = line.split()
        if len(p) >= 3 and p[1] in 'tTwW':
            syms.append((int(p[0], 16), tag + ':' + p[2]))
syms.sort()
addrs = [a for a, _ in syms]
def sym(pc):
    i = bisect.bisect_right(addrs, pc) - 1
    if pc < 0x800000: return 'busybox/prog'
    if i < 0: return '?%x' % pc
    return syms[i][1]
pending = {}
size = {}
cnt = collections.Counter()
percpu = collections.Counter()
inwin = False
cur_pc = None; n = 0
trace = re.compile(r'Trace (\d+): (0x[0-9a-f]+) \[[0-9a-f]+/([0-9a-f]+)/')
total = 0
# TBPROF_DETAIL=SUBSTRING: also list the translation blocks (by start pc)
# of the symbols whose name holds SUBSTRING, for addr2line.
import os
detail = os.environ.get('TBPROF_DETAIL')
bypc = collections.Counter()
# Calls: executions of a block starting at a symbol's first instruction.
starts = {a: n for a, n in syms}
calls = collections.Counter()
with open(log, errors='replace') as fh:
    for line in fh:
        if line.startswith('IN:'):
            cur_pc = None; n = 0
            continue
        if line.startswith('0x'):
            a = int(line.split(':')[0], 16)
            if cur_pc is None: cur_pc = a
            n += 1
            continue
        if line.startswith('Trace'):
            if cur_pc is not None:
                pending[cur_pc] = n; cur_pc = None
            m = trace.match(line)
            if not m: continue
            cpu, host, pc = m.group(1), m.group(2), int(m.group(3), 16)
            if pc in pending: size[host] = pending.pop(pc)
            if not inwin:
                if pc == begin: inwin = True
                continue
            if pc == end: break
            s = size.get(host, 1)
            cnt[sym(pc)] += s; percpu[cpu] += s; total += s
            if detail and detail in sym(pc): bypc[pc] += s
            if pc in starts: calls[starts[pc]] += 1
print('total', total)
print('percpu', dict(percpu))
for k, v in cnt.most_common(80):
    print('%10d %5.1f%% %s' % (v, 100.0*v/max(total,1), k))
print('calls (blocks entered at a symbol start)')
for k, v in calls.most_common(60):
    print('%10d %s' % (v, k))
if detail:
    print('blocks of', detail)
    for pc, v in bypc.most_common(60):
        print('%10d %x' % (v, pc))
