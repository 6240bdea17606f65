"""camlab.worker.UpdateWorker: order, back-pressure, error propagation; metric updates on it are bit-identical."""

import pickle
import threading

import numpy as np
import pytest
import torch

from _wsol_maps import batches, gts, make_dataset
from _wsol_reference import ref_max_box_acc
from camlab.worker import UpdateWorker
from camlab.wsol import WSOLMetrics, threshold_grid


def test_update_worker_keeps_order_and_reraises_the_first_error():
    out = []
    w = UpdateWorker(max_pending=1)
    for i in range(50):
        w.submit(out.append, i)
    w.join()
    assert out == list(range(50))

    def fail(msg):
        raise KeyError(msg)

    w = UpdateWorker(max_pending=4)
    gate = threading.Event()
    w.submit(gate.wait)  # holds the worker until all three calls below are queued
    w.submit(fail, "first")
    w.submit(fail, "second")  # skipped: the worker stops running calls after a failure
    w.submit(out.append, -1)
    gate.set()
    with pytest.raises(KeyError, match="first"):
        w.join()
    assert out[-1] == 49
    w.join()  # raised once
    w.submit(fail, "at submit")
    w._queue.join()  # the failing call has run: the next submit re-raises instead of queueing
    with pytest.raises(KeyError, match="at submit"):
        w.submit(out.append, -2)
    w.submit(out.append, 50)
    w.close()
    assert out[-1] == 50 and -1 not in out and -2 not in out
    assert w._thread is None
    w.submit(fail, "dropped")
    w.close(raise_errors=False)  # cleanup path: no exception
    pickle.loads(pickle.dumps(w))  # a callback holding a worker stays picklable
    with pytest.raises(ValueError):
        UpdateWorker(max_pending=0)


def test_update_worker_back_pressure():
    w = UpdateWorker(max_pending=2)
    gate = threading.Event()
    w.submit(gate.wait)  # running
    w.submit(int)
    w.submit(int)  # the queue is full now
    blocked = threading.Thread(target=w.submit, args=(int,), daemon=True)
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # submit waits while max_pending calls are queued
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive()
    w.close()


def test_metric_updates_on_the_worker_are_bit_identical():
    data = make_dataset(n=23, H=24, W=30)
    direct, threaded = (WSOLMetrics(masks=True, topk=(1, 2)) for _ in range(2))
    worker = UpdateWorker()
    for b in batches(data, 4):
        direct.update(**b)
        worker.submit(threaded.update, **b)
    worker.join()
    ra, rb = direct.compute(), threaded.compute()
    assert ra.keys() == rb.keys() and all(torch.equal(ra[k], rb[k]) for k in ra)
    pa, pb = direct.report(), threaded.report()
    assert pa.curves == pb.curves and pa.rows.keys() == pb.rows.keys()
    assert all(np.array_equal(pa.rows[k], pb.rows[k], equal_nan=True) for k in pa.rows)
    maps = data["cams"].numpy()
    best, _ = ref_max_box_acc(maps, [gts(data, i) for i in range(len(maps))], threshold_grid(), (30, 50, 70), True)
    assert rb["MaxBoxAccV2"].item() == pytest.approx(np.mean([best[k] for k in (30, 50, 70)]), abs=1e-12)
    bad = next(batches(data, 4))
    worker.submit(threaded.update, **{**bad, "num_boxes": torch.zeros(4, dtype=torch.long)})
    with pytest.raises(ValueError, match="num_boxes"):
        worker.join()
    worker.close()
