"""A Dask LocalCluster for tests/test_cluster.py, run by the Dask venv's interpreter (never by Blender).

    python tests/dask_cluster.py     # prints {"address": ..., "workers": [pids]} as one line

A scheduler and 2 worker processes (1 thread each) on 127.0.0.1, on a free port. It runs until its
standard input closes, then closes the cluster. The test starts it in a session of its own and
kills that session at the end, whatever happened.
"""

import json
import os
import sys

if __name__ == "__main__":
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
    )
    with Client(cluster.scheduler_address) as client:
        workers = sorted(client.run(os.getpid).values())
    print(json.dumps({"address": cluster.scheduler_address, "workers": workers, "pid": os.getpid()}), flush=True)
    sys.stdin.read()
    cluster.close(timeout=10)
