"""The row-run kernel: every cut level of one image labelled from its rows, fast on smooth maps.

Only the distinct cut levels matter; a pixel's level index ("rank") says at which of them it is foreground.
One forward and one backward pass per row give, for every level, the row's first and last foreground
column (from the prefix and suffix maxima of the ranks, branch-free) and the row's *gaps*: a column is
background enclosed by foreground on both sides of its row exactly at the levels ``[rank, min(prefix max,
suffix max))``, and the changes of that range along the row are recorded as events, bucketed by level. A
level without events has at most one run per row: its components are chains of consecutive rows whose runs
touch, and nothing is enclosed, so there is no hole; it costs one step per row. The other levels cut each
row's ``[first, last]`` by its gaps and join the runs by union-find (foreground 8-connected; gaps
4-connected, a gap touching a background column outside a neighbour row's ``[first, last]`` reaches the
border, the rest are holes).

The cost grows with the number of gap events, i.e. with the number of runs per row and level: rough maps
with many components go to :mod:`camlab.wsol.unionfind` instead (see :func:`camlab.wsol.levels.scan_levels`),
which :func:`scan_rows` signals by returning False when the events exceed its budget.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from camlab.wsol.boxes import best_iou

__all__ = ["find_root", "level_ranks", "scan_rows"]


@njit(cache=True, inline="always")
def find_root(parent, x):
    """The root of x in a union-find forest, halving the path on the way."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True)
def _grow(a, size):
    b = np.empty(size, a.dtype)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def level_ranks(levels):
    """Distinct cut levels (clamped to [-1, 255]) -> (rank LUT, level index per cut value + 1, count).

    ``rank[v]`` is the number of distinct levels below the uint8 value v, so a pixel is foreground at the
    j-th level (ascending) iff ``rank[u8] > j``.
    """
    used = np.zeros(257, np.bool_)
    for k in range(levels.shape[0]):
        used[min(max(levels[k], -1), 255) + 1] = True
    index = np.full(257, -1, np.int64)
    n = 0
    for i in range(257):
        if used[i]:
            index[i] = n
            n += 1
    rank = np.zeros(256, np.int32)
    c = 0
    for v in range(256):
        if used[v]:  # level v - 1 lies below v
            c += 1
        rank[v] = c
    return rank, index, n


@njit(cache=True)
def _row_scan(u8, rank, n, L, R, rmax):
    """One forward pass per row over the pixels and one backward pass over its runs of equal rank: run ends
    per level, and the enclosed-gap events.

    Writes ``L[j, y]`` / ``R[j, y]`` (first / last foreground column of row y at level j, for j <
    ``rmax[y]``, the rank of the row's max). Returns the gap events as level ranges ``[lo, hi)`` with a
    boundary position (the gap membership differs between columns pos - 1 and pos at those levels), per
    row the end offset into them, and their count. A level without events has at most one run per row.
    """
    H, W = u8.shape
    lastF = np.empty(n + 2, np.int32)
    lastB = np.empty(n + 2, np.int32)
    run_rank = np.empty(W, np.int32)
    run_end = np.empty(W, np.int32)  # last column of each run of equal rank
    run_pmax = np.empty(W, np.int32)  # prefix max of the ranks up to the end of the run
    row_cap = 2 * (W + 1) + 2  # at most two level ranges per column boundary
    cap = row_cap + H * W // 4
    elo = np.empty(cap, np.int32)
    ehi = np.empty(cap, np.int32)
    ex = np.empty(cap, np.int32)
    rowend = np.empty(H, np.int64)
    ne = 0
    for y in range(H):
        if ne + row_cap > cap:
            cap = 2 * cap
            elo = _grow(elo, cap)
            ehi = _grow(ehi, cap)
            ex = _grow(ex, cap)
        # forward: prefix max of the ranks; lastF[m] = last column whose prefix max (before it) is m,
        # i.e. the column where the prefix max rises above m: the first foreground column of level m.
        # The row is also cut into runs of equal rank (branch-free: the run index k moves on a change).
        lastF[:] = -1
        pm = 0
        k = -1
        prev = -1
        for x in range(W):
            r = rank[u8[y, x]]
            lastF[pm] = x
            pm = max(pm, r)
            k += r != prev
            prev = r
            run_rank[k] = r
            run_end[k] = x
        rmax[y] = pm
        cur = 0
        for j in range(pm):  # levels the prefix max jumped over start at the same column
            cur = max(cur, lastF[j])
            L[j, y] = cur
        m = 0
        for q in range(k + 1):
            m = max(m, run_rank[q])
            run_pmax[q] = m
        # backward: suffix max, last foreground column per level, and the gaps. Column x is background
        # enclosed by foreground on both sides of its row ("gap") at the levels [r, t), t = min(prefix max,
        # suffix max); every background run between two foreground runs is made of such columns. Within a
        # run of equal rank r, t and hence the gap levels are the same in every column, so only a run's last
        # column can start or end gap levels, and only there can the suffix max rise: one step per run gives
        # the same events and run ends as one step per column.
        lastB[:] = W
        sm = 0
        pa = 0
        pb = 0  # gap levels [pa, pb) of the run to the right (none right of the row)
        for q in range(k, -1, -1):
            r = run_rank[q]
            x = run_end[q]
            lastB[sm] = x
            sm = max(sm, r)
            t = min(run_pmax[q], sm)
            if t > r or pb > pa:
                a = r
                b = max(t, r)
                # the levels where [pa, pb) and [a, b) differ: at most two ranges (branch-free)
                dis = (pb <= a) | (b <= pa)
                lo1 = pa if dis else min(pa, a)
                hi1 = pb if dis else max(pa, a)
                lo2 = a if dis else min(pb, b)
                hi2 = b if dis else max(pb, b)
                elo[ne] = lo1
                ehi[ne] = hi1
                ex[ne] = x + 1
                ne += hi1 > lo1
                elo[ne] = lo2
                ehi[ne] = hi2
                ex[ne] = x + 1
                ne += hi2 > lo2
                pa = a
                pb = b
            else:
                pa = r
                pb = r
        cur = W
        for j in range(pm):
            cur = min(cur, lastB[j])
            R[j, y] = cur
        rowend[y] = ne
    return elo, ehi, ex, rowend, ne


@njit(cache=True)
def _events_by_level(elo, ehi, ex, rowend, ne, n):
    """Counting sort of the gap events by level, each range expanded: (start offsets per level, rows,
    positions). Stable: within a level, rows ascending and positions descending within a row."""
    H = rowend.shape[0]
    start = np.zeros(n + 2, np.int64)
    for e in range(ne):  # per-level counts from a difference array
        start[elo[e] + 1] += 1
        start[ehi[e] + 1] -= 1
    for j in range(n):
        start[j + 1] += start[j]
    for j in range(n):
        start[j + 1] += start[j]
    fill = start[:n].copy()
    total = start[n]
    sy = np.empty(total, np.int32)
    sx = np.empty(total, np.int32)
    e = 0
    for y in range(H):
        while e < rowend[y]:
            x = ex[e]
            for j in range(elo[e], ehi[e]):
                p = fill[j]
                sy[p] = y
                sx[p] = x
                fill[j] = p + 1
            e += 1
    return start, sy, sx


@njit(cache=True)
def _chain_level(j, yf, yl, L, R, rmax, W, H, gt, n_gt, box):
    """(best IoU, number of contours) at a level where every row has at most one run: the components are
    chains of consecutive rows whose runs touch (8-connected), and no background is enclosed (no hole).
    ``box`` (4,) gets the best box (the first one of the best IoU)."""
    best = 0.0
    count = 0
    opened = False
    pa = 0
    pb = 0
    bx0 = 0
    bx1 = 0
    by0 = 0
    for y in range(yf, yl + 2):
        live = y <= yl and rmax[y] > j
        a = 0
        b = 0
        if live:
            a = L[j, y]
            b = R[j, y]
            if opened and a <= pb + 1 and pa <= b + 1:
                bx0 = min(bx0, a)
                bx1 = max(bx1, b)
                pa = a
                pb = b
                continue
        if opened:  # close the chain that ended at row y - 1
            v = best_iou(bx0, by0, min(bx1 + 1, W - 1), min(y, H - 1), gt, n_gt)
            if v > best or count == 0:
                best = v
                box[0] = bx0
                box[1] = by0
                box[2] = min(bx1 + 1, W - 1)
                box[3] = min(y, H - 1)
            count += 1
            opened = False
        if live:
            opened = True
            bx0 = a
            bx1 = b
            by0 = y
            pa = a
            pb = b
    return best, count


@njit(cache=True, inline="always")
def _merge_box(bb, ra, rb):
    bb[rb, 0] = min(bb[rb, 0], bb[ra, 0])
    bb[rb, 1] = min(bb[rb, 1], bb[ra, 1])
    bb[rb, 2] = max(bb[rb, 2], bb[ra, 2])
    bb[rb, 3] = max(bb[rb, 3], bb[ra, 3])


@njit(cache=True)
def _general_level(j, yf, yl, e0, e1, sy, sx, L, R, rmax, W, H, gt, n_gt, buf, box, cbox):
    """(best IoU, number of contours, best IoU of the components alone, number of components) over the
    components and holes of one level whose rows may hold several runs; ``box`` / ``cbox`` (4,) get the
    best boxes.

    A row's runs are [L, R] cut by its gaps (level events in pairs, right to left). Runs of consecutive
    rows join by union-find over nodes (8-connected); a single run under a single touching run extends
    that run's node. Gaps join 4-connected; a gap that touches a background column outside a neighbour
    row's [L, R] (or a row without foreground, or the image border) reaches the border, the others are
    holes, whose box is their pixel box grown by one.
    """
    par, bb, gpar, gbb, gborder, cx0, cx1, cnode, px0, px1, pnode, hx0, hx1, gnode, phx0, phx1, pgnode = buf
    best = 0.0
    nf = 0
    ngn = 0
    pc = 0
    pgc = 0
    e = e0
    y = yf - 1
    while y < yl:
        y += 1
        if rmax[y] <= j:
            pc = 0
            pgc = 0
            continue
        e_start = e
        while e < e1 and sy[e] == y:
            e += 1
        k = (e - e_start) // 2  # gaps in this row
        right = R[j, y]
        for q in range(k):
            b_right = sx[e_start + 2 * q]
            b_left = sx[e_start + 2 * q + 1]
            cx0[k - q] = b_right
            cx1[k - q] = right
            hx0[k - 1 - q] = b_left
            hx1[k - 1 - q] = b_right - 1
            right = b_left - 1
        cx0[0] = L[j, y]
        cx1[0] = right
        cc = k + 1
        if cc == 1 and pc == 1 and cx0[0] <= px1[0] + 1 and px0[0] <= cx1[0] + 1:
            # a single run under a single touching run, and the rows after it that are the same (no gap,
            # touching): one chain step each, then one update of the component's box
            a = cx0[0]
            b = cx1[0]
            lo = a
            hi = b
            while y < yl and rmax[y + 1] > j and (e >= e1 or sy[e] != y + 1):
                a2 = L[j, y + 1]
                b2 = R[j, y + 1]
                if a2 > b + 1 or a > b2 + 1:
                    break
                y += 1
                a = a2
                b = b2
                lo = min(lo, a)
                hi = max(hi, b)
            cx0[0] = a
            cx1[0] = b
            root = find_root(par, pnode[0])
            bb[root, 0] = min(bb[root, 0], lo)
            bb[root, 2] = max(bb[root, 2], hi)
            bb[root, 3] = y
            cnode[0] = root
        else:
            for q in range(cc):
                par[nf] = nf
                bb[nf, 0] = cx0[q]
                bb[nf, 1] = y
                bb[nf, 2] = cx1[q]
                bb[nf, 3] = y
                cnode[q] = nf
                nf += 1
            i = 0
            q = 0
            while i < pc and q < cc:
                if px0[i] <= cx1[q] + 1 and cx0[q] <= px1[i] + 1:
                    ra = find_root(par, pnode[i])
                    rb = find_root(par, cnode[q])
                    if ra != rb:
                        par[ra] = rb
                        _merge_box(bb, ra, rb)
                if px1[i] < cx1[q]:
                    i += 1
                else:
                    q += 1
        for q in range(k):
            g0 = hx0[q]
            g1 = hx1[q]
            gpar[ngn] = ngn
            gbb[ngn, 0] = g0
            gbb[ngn, 1] = y
            gbb[ngn, 2] = g1
            gbb[ngn, 3] = y
            bd = y == 0 or y == H - 1
            if not bd:
                bd = (rmax[y - 1] <= j or g0 < L[j, y - 1] or g1 > R[j, y - 1]
                      or rmax[y + 1] <= j or g0 < L[j, y + 1] or g1 > R[j, y + 1])
            gborder[ngn] = bd
            gnode[q] = ngn
            ngn += 1
        i = 0
        q = 0
        while i < pgc and q < k:
            if phx0[i] <= hx1[q] and hx0[q] <= phx1[i]:
                ra = find_root(gpar, pgnode[i])
                rb = find_root(gpar, gnode[q])
                if ra != rb:
                    gpar[ra] = rb
                    _merge_box(gbb, ra, rb)
                    gborder[rb] = gborder[rb] or gborder[ra]
            if phx1[i] < hx1[q]:
                i += 1
            else:
                q += 1
        for q in range(cc):  # this row becomes the previous one (loops: slice copies allocate)
            px0[q] = cx0[q]
            px1[q] = cx1[q]
            pnode[q] = cnode[q]
        pc = cc
        for q in range(k):
            phx0[q] = hx0[q]
            phx1[q] = hx1[q]
            pgnode[q] = gnode[q]
        pgc = k
    count = 0
    for r in range(nf):
        if par[r] == r:
            x0, y0, x1, y1 = bb[r, 0], bb[r, 1], min(bb[r, 2] + 1, W - 1), min(bb[r, 3] + 1, H - 1)
            v = best_iou(x0, y0, x1, y1, gt, n_gt)
            if v > best or count == 0:
                best = v
                cbox[0], cbox[1], cbox[2], cbox[3] = x0, y0, x1, y1
            count += 1
    best_comp = best
    ncomp = count
    box[:] = cbox
    for r in range(ngn):
        if gpar[r] == r and not gborder[r]:
            x0, y0 = gbb[r, 0] - 1, gbb[r, 1] - 1
            x1, y1 = min(gbb[r, 2] + 2, W - 1), min(gbb[r, 3] + 2, H - 1)
            v = best_iou(x0, y0, x1, y1, gt, n_gt)
            if v > best:
                best = v
                box[0], box[1], box[2], box[3] = x0, y0, x1, y1
            count += 1
    return best, count, best_comp, ncomp


@njit(cache=True)
def scan_rows(u8, levels, gt, n_gt, max_events, iou, box, count):
    """All-contour and component-only results of one image at every cut level; False (nothing written)
    when the gap events exceed ``max_events`` (a rough map: use the union-find kernel).

    u8 (H, W) uint8; levels (K,) cut levels (foreground is ``u8 > level``); gt (G, 4) inclusive ints, the
    first n_gt valid. Written: iou (2, K) float64 best IoU over all tree-mode contours [0] and over the
    8-connected components alone [1]; box (2, K, 4) the box of that IoU (the empty box (0, 0, 0, 0) where
    there is no contour); count (2, K) the number of contours (components plus holes) [0] and of components [1].
    """
    H, W = u8.shape
    rank, index, n = level_ranks(levels)
    L = np.empty((n, H), np.int32)
    R = np.empty((n, H), np.int32)
    rmax = np.zeros(H, np.int32)
    elo, ehi, ex, rowend, ne = _row_scan(u8, rank, n, L, R, rmax)
    total = 0
    for e in range(ne):
        total += ehi[e] - elo[e]
    if total > max_events:
        return False
    start, sy, sx = _events_by_level(elo, ehi, ex, rowend, ne, n)
    cap = H + sy.shape[0] // 2 + 2  # nodes of one level: at most one per run
    wr = W // 2 + 2  # runs (and gaps) of one row
    buf = (np.empty(cap, np.int32), np.empty((cap, 4), np.int32), np.empty(cap, np.int32),
           np.empty((cap, 4), np.int32), np.empty(cap, np.bool_), np.empty(wr, np.int32), np.empty(wr, np.int32),
           np.empty(wr, np.int32), np.empty(wr, np.int32), np.empty(wr, np.int32), np.empty(wr, np.int32),
           np.empty(wr, np.int32), np.empty(wr, np.int32), np.empty(wr, np.int32), np.empty(wr, np.int32),
           np.empty(wr, np.int32), np.empty(wr, np.int32))
    best = np.zeros((2, n), np.float64)
    bbox = np.zeros((2, n, 4), np.int32)
    cnt = np.zeros((2, n), np.int64)
    empty = best_iou(0, 0, 0, 0, gt, n_gt)  # no contour: the box (0, 0, 0, 0)
    yf = 0
    yl = H - 1
    for j in range(n):
        # rows with foreground at level j lie in [yf, yl], a range that only shrinks as j grows
        while yf <= yl and rmax[yf] <= j:
            yf += 1
        while yl >= yf and rmax[yl] <= j:
            yl -= 1
        if yf > yl:
            best[0, j] = empty
            best[1, j] = empty
        elif start[j] == start[j + 1]:
            best[0, j], cnt[0, j] = _chain_level(j, yf, yl, L, R, rmax, W, H, gt, n_gt, bbox[0, j])  # no holes
            best[1, j] = best[0, j]
            cnt[1, j] = cnt[0, j]
            bbox[1, j] = bbox[0, j]
        else:
            best[0, j], cnt[0, j], best[1, j], cnt[1, j] = _general_level(
                j, yf, yl, start[j], start[j + 1], sy, sx, L, R, rmax, W, H, gt, n_gt, buf, bbox[0, j], bbox[1, j])
    for k in range(levels.shape[0]):
        j = index[min(max(levels[k], -1), 255) + 1]
        for c in range(2):
            iou[c, k] = best[c, j]
            count[c, k] = cnt[c, j]
            box[c, k] = bbox[c, j]
    return True
