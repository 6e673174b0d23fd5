"""Locust users for `canonlabel serve`: steady mixed traffic, loopback only.

Each user sends one request per second (``constant_throughput(1)``): 70% texts seen
before (cache and exact hits), 25% new Banking77 texts (LLM misses), 5% batches of 8.
Started by ``benchmarks/faults.py load``; texts come from ``CANONLABEL_LOAD_TEXTS``.
"""

from __future__ import annotations

import json
import os
import random

from locust import HttpUser, constant_throughput, task

with open(os.environ["CANONLABEL_LOAD_TEXTS"], encoding="utf-8") as fh:
    TEXTS = json.load(fh)
SEEN = TEXTS[:200]


class Client(HttpUser):
    wait_time = constant_throughput(1)

    def on_start(self) -> None:
        self.rng = random.Random(id(self))

    @task(70)
    def repeated(self) -> None:
        self.client.post("/v1/classify", json={"text": self.rng.choice(SEEN)}, name="hit")

    @task(25)
    def new(self) -> None:
        self.client.post("/v1/classify", json={"text": self.rng.choice(TEXTS)}, name="mixed")

    @task(5)
    def batch(self) -> None:
        items = [{"text": self.rng.choice(TEXTS)} for _ in range(8)]
        self.client.post("/v1/classify/batch", json={"items": items}, name="batch")
