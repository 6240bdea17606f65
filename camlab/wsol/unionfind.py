"""The union-find kernel: every cut level of one image in one pass over its pixels, whatever the map.

Pixels are sorted by level index ("rank", a counting sort) and join the foreground from the highest level
down, each merged with its already-present 8-neighbours by union-find (path halving), the component boxes
merged with them. Active neighbours that are consecutive around the 8-ring are 4-adjacent, so they already
share a component: one find per arc of the ring (a lookup table gives the arcs of each neighbour mask).

* Components per level: a running count (+1 per pixel, -1 per merge).
* Holes per level: the Euler number of 8-connected foreground / 4-connected background is
  ``components - holes``; it changes by a local amount when a pixel joins (a lookup table over the
  neighbour mask: the bit-quad formula ``(Q1 - Q3 - 2 QD) / 4``), so hole counts cost nothing extra.
* Best IoU per level: the components touched at a level get their IoU recomputed and pushed on a max-heap
  with a version stamp; stale entries (merged away, or re-pushed since) are dropped from the top. The cost
  is O(N log N) in the worst case and does not depend on how many components a level has.
* Hole boxes: only where some level has a hole, a dual pass on the background (4-connected, from the
  lowest level up) with the image frame as one always-present background component; a background
  component is a hole while it does not touch the frame. Present 4-neighbours joined through a present
  corner already share a component, so again one find per group (a second lookup table).

Exactly the results of :func:`camlab.wsol.rowscan.scan_rows` (checked on every map kind in the tests),
except which of several boxes with the same best IoU is reported.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from camlab.wsol.boxes import best_iou
from camlab.wsol.rowscan import find_root, level_ranks

__all__ = ["ARCS", "EULER", "GROUPS", "NARCS", "NGROUPS", "scan_union_find"]

_RING = (0, 1, 2, 4, 7, 6, 5, 3)  # neighbour bits around the ring: NW N NE E SE S SW W


def _euler_table() -> np.ndarray:
    """4 x the change of the Euler number when the centre pixel joins, per 8-neighbour mask (bits: 0 NW,
    1 N, 2 NE, 3 W, 4 E, 5 SW, 6 S, 7 SE), from the four 2x2 quads that contain the centre."""

    def quad(a, b, c, d):  # a b / c d -> Q1 - Q3 - 2 QD
        n = a + b + c + d
        return 1 if n == 1 else -1 if n == 3 else -2 if (n == 2 and a == d) else 0

    table = np.zeros(256, np.int8)
    for m in range(256):
        nw, n, ne, w, e, sw, s, se = ((m >> k) & 1 for k in range(8))
        after = quad(nw, n, w, 1) + quad(n, ne, 1, e) + quad(w, 1, sw, s) + quad(1, e, s, se)
        before = quad(nw, n, w, 0) + quad(n, ne, 0, e) + quad(w, 0, sw, s) + quad(0, e, s, se)
        table[m] = after - before
    return table


def _arc_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-neighbour mask: the number of maximal arcs of set bits around the ring and the first
    neighbour (bit index) of each."""
    narcs = np.zeros(256, np.int8)
    arcs = np.zeros((256, 4), np.int8)
    for m in range(256):
        on = [(m >> b) & 1 for b in _RING]
        if all(on):
            narcs[m], arcs[m, 0] = 1, _RING[0]
            continue
        starts = [_RING[i] for i in range(8) if on[i] and not on[i - 1]]
        narcs[m] = len(starts)
        arcs[m, : len(starts)] = starts
    return narcs, arcs


def _group_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-neighbour mask of present *background* pixels: the groups of present 4-neighbours (N, E, S, W)
    that are already 4-connected through the present corner between two of them, and the first of each."""
    edges, corners = (1, 4, 6, 3), (2, 7, 5, 0)  # N E S W, and the corners NE SE SW NW between consecutive ones
    ngroups = np.zeros(256, np.int8)
    groups = np.zeros((256, 4), np.int8)
    for m in range(256):
        on = [(m >> b) & 1 for b in edges]
        link = [on[i] and on[(i + 1) % 4] and (m >> corners[i]) & 1 for i in range(4)]  # edge i with edge i + 1
        if all(link):
            ngroups[m], groups[m, 0] = 1, edges[0]
            continue
        starts = [edges[i] for i in range(4) if on[i] and not link[i - 1]]
        ngroups[m] = len(starts)
        groups[m, : len(starts)] = starts
    return ngroups, groups


EULER = _euler_table()
NARCS, ARCS = _arc_tables()
NGROUPS, GROUPS = _group_tables()


@njit(cache=True, inline="always")
def _push(hv, hid, hver, size, v, r, ver):
    i = size
    while i > 0:
        p = (i - 1) >> 1
        if hv[p] >= v:
            break
        hv[i] = hv[p]
        hid[i] = hid[p]
        hver[i] = hver[p]
        i = p
    hv[i] = v
    hid[i] = r
    hver[i] = ver
    return size + 1


@njit(cache=True, inline="always")
def _pop(hv, hid, hver, size):
    size -= 1
    v = hv[size]
    r = hid[size]
    ver = hver[size]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and hv[c + 1] > hv[c]:
            c += 1
        if hv[c] <= v:
            break
        hv[i] = hv[c]
        hid[i] = hid[c]
        hver[i] = hver[c]
        i = c
    if size > 0:
        hv[i] = v
        hid[i] = r
        hver[i] = ver
    return size


@njit(cache=True, inline="always")
def _box_of(r, bx0, by0, bx1, by1, grow, W, H, out):
    # root r's scored box: its pixel box (grow 0: a component) or its pixel box grown by one (grow 1: a hole),
    # then the boundingRect quirk and wsoleval's clip
    out[0] = bx0[r] - grow
    out[1] = by0[r] - grow
    out[2] = min(bx1[r] + 1 + grow, W - 1)
    out[3] = min(by1[r] + 1 + grow, H - 1)


@njit(cache=True)
def _level_best(dirty, nd, parent, ver, bx0, by0, bx1, by1, grow, W, H, gt, n_gt, hv, hid, hver, hs, best, bbox, j):
    """At the end of level j: re-score the roots touched there, push those above IoU 0, drop stale tops
    (merged away or re-pushed since); best[j] / bbox[j] get the top. Returns the heap size."""
    box = np.empty(4, np.int64)
    for d in range(nd):
        r = dirty[d]
        if parent[r] == r:
            _box_of(r, bx0, by0, bx1, by1, grow, W, H, box)
            v = best_iou(box[0], box[1], box[2], box[3], gt, n_gt)
            ver[r] += 1
            if v > 0:
                hs = _push(hv, hid, hver, hs, v, r, ver[r])
    while hs > 0 and not (parent[hid[0]] == hid[0] and hver[0] == ver[hid[0]]):
        hs = _pop(hv, hid, hver, hs)
    if hs > 0:
        best[j] = hv[0]
        _box_of(hid[0], bx0, by0, bx1, by1, grow, W, H, bbox[j])
    return hs


@njit(cache=True, inline="always")
def _merge(bx0, by0, bx1, by1, into, other):
    bx0[into] = min(bx0[into], bx0[other])
    by0[into] = min(by0[into], by0[other])
    bx1[into] = max(bx1[into], bx1[other])
    by1[into] = max(by1[into], by1[other])


@njit(cache=True)
def scan_union_find(u8, levels, gt, n_gt, iou, box, count):
    """The outputs of :func:`camlab.wsol.rowscan.scan_rows` for one image (see there), by union-find."""
    H, W = u8.shape
    W2 = W + 2
    N2 = (H + 2) * W2
    rank, index, n = level_ranks(levels)
    R = np.full(N2, -1, np.int16)  # ranks on a frame of -1: never foreground, always background
    cnt = np.zeros(n + 2, np.int64)
    for y in range(H):
        base = (y + 1) * W2 + 1
        for x in range(W):
            r = rank[u8[y, x]]
            R[base + x] = r
            cnt[r] += 1
    start = np.zeros(n + 2, np.int64)
    for r in range(n + 1):
        start[r + 1] = start[r] + cnt[r]
    order = np.empty(H * W, np.int32)  # (y << 16) | x, by rank, raster order within a rank
    fill = start.copy()
    for y in range(H):
        base = (y + 1) * W2 + 1
        for x in range(W):
            r = R[base + x]
            order[fill[r]] = (y << 16) | x
            fill[r] += 1
    off = np.array([-W2 - 1, -W2, -W2 + 1, -1, 1, W2 - 1, W2, W2 + 1], np.int64)
    parent = np.empty(N2, np.int32)
    bx0 = np.empty(N2, np.int32)
    by0 = np.empty(N2, np.int32)
    bx1 = np.empty(N2, np.int32)
    by1 = np.empty(N2, np.int32)
    stamp = np.full(N2, -1, np.int32)
    ver = np.zeros(N2, np.int32)
    dirty = np.empty(H * W, np.int32)
    hv = np.empty(H * W + 1, np.float64)
    hid = np.empty(H * W + 1, np.int32)
    hver = np.empty(H * W + 1, np.int32)
    hs = 0
    best = np.zeros((2, n), np.float64)  # [0] components, [1] holes
    bbox = np.zeros((2, n, 4), np.int32)
    ncomp = np.zeros(n, np.int64)
    nhole = np.zeros(n, np.int64)
    comps = 0
    e4 = 0  # 4 x the Euler number of the foreground
    # foreground, from the highest level down: pixels of rank j + 1 join at level j
    for j in range(n - 1, -1, -1):
        rp = j + 1
        nd = 0
        for t in range(start[rp], start[rp + 1]):
            yx = order[t]
            yy = yx >> 16
            xx = yx & 0xFFFF
            p = (yy + 1) * W2 + xx + 1
            # present neighbours: higher rank, or the same rank earlier in raster order
            m = ((R[p - W2 - 1] >= rp) * 1 | (R[p - W2] >= rp) * 2 | (R[p - W2 + 1] >= rp) * 4
                 | (R[p - 1] >= rp) * 8 | (R[p + 1] > rp) * 16 | (R[p + W2 - 1] > rp) * 32
                 | (R[p + W2] > rp) * 64 | (R[p + W2 + 1] > rp) * 128)
            e4 += EULER[m]
            na = NARCS[m]
            if na == 0:
                parent[p] = p
                bx0[p] = xx
                by0[p] = yy
                bx1[p] = xx
                by1[p] = yy
                comps += 1
                root = p
            else:
                root = find_root(parent, p + off[ARCS[m, 0]])
                parent[p] = root
                bx0[root] = min(bx0[root], xx)
                by0[root] = min(by0[root], yy)
                bx1[root] = max(bx1[root], xx)
                by1[root] = max(by1[root], yy)
                for a in range(1, na):
                    rq = find_root(parent, p + off[ARCS[m, a]])
                    if rq != root:
                        parent[rq] = root
                        _merge(bx0, by0, bx1, by1, root, rq)
                        comps -= 1
            if stamp[root] != j:
                stamp[root] = j
                dirty[nd] = root
                nd += 1
        ncomp[j] = comps
        nhole[j] = comps - e4 // 4
        hs = _level_best(dirty, nd, parent, ver, bx0, by0, bx1, by1, 0, W, H, gt, n_gt, hv, hid, hver, hs, best[0],
                         bbox[0], j)
        if hs == 0 and comps > 0:  # every component scores 0: report one of them (any, as on IoU ties)
            if nd > 0:
                _box_of(find_root(parent, dirty[nd - 1]), bx0, by0, bx1, by1, 0, W, H, bbox[0, j])
            else:  # nothing joined at this level: the same foreground as the level above
                bbox[0, j] = bbox[0, j + 1]
    jmax = -1
    for j in range(n):
        if nhole[j] > 0:
            jmax = j
    if jmax >= 0:
        # background, from the lowest level up: pixels of rank j are background at level j and above
        outside = 0  # a frame cell: the root of everything that touches the border
        for p in range(N2):
            if R[p] < 0:
                parent[p] = outside
        stamp[:] = -1
        hs = 0
        for j in range(jmax + 1):
            nd = 0
            for t in range(start[j], start[j + 1]):
                yx = order[t]
                yy = yx >> 16
                xx = yx & 0xFFFF
                p = (yy + 1) * W2 + xx + 1
                # present: lower rank, or the same rank earlier in raster order (the frame always)
                m = ((R[p - W2 - 1] <= j) * 1 | (R[p - W2] <= j) * 2 | (R[p - W2 + 1] <= j) * 4
                     | (R[p - 1] <= j) * 8 | (R[p + 1] < j) * 16 | (R[p + W2 - 1] < j) * 32
                     | (R[p + W2] < j) * 64 | (R[p + W2 + 1] < j) * 128)
                ng = NGROUPS[m]
                ver[p] = 0
                if ng == 0:
                    parent[p] = p
                    bx0[p] = xx
                    by0[p] = yy
                    bx1[p] = xx
                    by1[p] = yy
                    root = p
                else:
                    root = find_root(parent, p + off[GROUPS[m, 0]])
                    parent[p] = root
                    if root != outside:
                        bx0[root] = min(bx0[root], xx)
                        by0[root] = min(by0[root], yy)
                        bx1[root] = max(bx1[root], xx)
                        by1[root] = max(by1[root], yy)
                    for a in range(1, ng):
                        rq = find_root(parent, p + off[GROUPS[m, a]])
                        if rq != root:
                            if root == outside:
                                parent[rq] = outside
                            elif rq == outside:
                                parent[root] = outside
                                root = outside
                            else:
                                parent[rq] = root
                                _merge(bx0, by0, bx1, by1, root, rq)
                if root != outside and stamp[root] != j:
                    stamp[root] = j
                    dirty[nd] = root
                    nd += 1
            if nhole[j] == 0:
                continue
            hs = _level_best(dirty, nd, parent, ver, bx0, by0, bx1, by1, 1, W, H, gt, n_gt, hv, hid, hver, hs,
                             best[1], bbox[1], j)
    empty = best_iou(0, 0, 0, 0, gt, n_gt)
    for k in range(levels.shape[0]):
        j = index[min(max(levels[k], -1), 255) + 1]
        count[0, k] = ncomp[j] + nhole[j]
        count[1, k] = ncomp[j]
        if ncomp[j] == 0:
            iou[0, k] = empty
            iou[1, k] = empty
            box[0, k] = 0
            box[1, k] = 0
        else:
            iou[1, k] = best[0, j]
            box[1, k] = bbox[0, j]
            if best[1, j] > best[0, j]:
                iou[0, k] = best[1, j]
                box[0, k] = bbox[1, j]
            else:
                iou[0, k] = best[0, j]
                box[0, k] = bbox[0, j]

