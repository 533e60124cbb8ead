"""The feature consumers as Ray actors that Ray restarts: a consumer that crashes (or is SIGKILLed) is
running again within seconds without a person, from the last committed offsets (at-least-once, and
both stores dedupe by event_id, so nothing is counted twice). More workers are more members of the
same consumer group: ingestion scales out up to the topic's partition count.

`recsys consume` starts them on the configured Ray cluster (`recsys consume --foreground` runs one in
the terminal instead); `recsys services status` lists them with their restarts and the group's lag.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import ray
from omegaconf import OmegaConf

NAMESPACE = "recsys"


def _name(cfg, index: int) -> str:
    """One actor per group member: `<group id>-<index>`, so a benchmark's group never meets the live one."""
    return f"{cfg.features.consumer.group_id}-{index}"


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
class ConsumerWorker:
    """One member of the consumer group. Ray re-runs __init__ in a new process after a crash, so the
    consume loop starts again by itself; if the loop ever ends unasked, the process exits to be restarted."""

    def __init__(self, cfg_dict: dict, index: int):
        from recsys.features.consumer import run_consumer

        cfg = OmegaConf.create(cfg_dict)
        log_file = Path(cfg.state_dir) / "logs" / f"{_name(cfg, index)}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
        logging.getLogger("recsys").addHandler(handler)
        logging.getLogger("recsys").setLevel(logging.INFO)
        self._stopping = threading.Event()

        def loop() -> None:
            run_consumer(cfg, stop=self._stopping.is_set)
            if not self._stopping.is_set():
                os._exit(1)

        self._thread = threading.Thread(target=loop, name="consume", daemon=True)
        self._thread.start()

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(15)


@dataclass
class WorkerStatus:
    name: str
    state: str
    restarts: int
    pid: int | None

    def line(self) -> str:
        return f"{self.name:<20} {self.state:<9} restarts {self.restarts:<3} pid {self.pid or '-'}"


def _connect(cfg) -> None:
    from recsys.raycluster import ensure_ray

    ensure_ray(cfg)


def start(cfg) -> list[str]:
    """Start `features.consumer.workers` detached consumer actors (idempotent); their names."""
    _connect(cfg)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    names = []
    for index in range(int(cfg.features.consumer.workers)):
        worker = ConsumerWorker.options(name=_name(cfg, index), namespace=NAMESPACE, lifetime="detached",
                                        get_if_exists=True).remote(cfg_dict, index)
        ray.get(worker.pid.remote(), timeout=120)
        names.append(_name(cfg, index))
    return names


def _workers(cfg) -> dict[str, "ray.actor.ActorHandle"]:
    out = {}
    for index in range(int(cfg.features.consumer.workers)):
        try:
            out[_name(cfg, index)] = ray.get_actor(_name(cfg, index), namespace=NAMESPACE)
        except ValueError:
            pass
    return out


def stop(cfg) -> list[str]:
    """Stop the consumers cleanly (their current batch finishes and commits), then remove the actors."""
    _connect(cfg)
    workers = _workers(cfg)
    for handle in workers.values():
        try:
            ray.get(handle.stop.remote(), timeout=30)
        except Exception:
            pass
        ray.kill(handle, no_restart=True)
    return list(workers)


def consumer_pids(cfg) -> dict[str, int]:
    """name -> OS pid of each running consumer (what a chaos test kills)."""
    _connect(cfg)
    return {name: ray.get(h.pid.remote(), timeout=30) for name, h in _workers(cfg).items()}


def status(cfg) -> list[WorkerStatus]:
    """Each configured worker's state and restart count, read from Ray's control store (GCS) directly:
    the public state API needs the dashboard, which a head may run without."""
    from ray._private import state

    _connect(cfg)
    out = []
    for name, handle in _workers(cfg).items():
        info = state.actors(actor_id=handle._actor_id.hex())
        out.append(WorkerStatus(name, info["State"], int(info["NumRestarts"]), info["Pid"] or None))
    return out


class LagProbe:
    """The consumer group's lag, read with one long-lived client (a benchmark polls it)."""

    def __init__(self, cfg, group_id: str | None = None, timeout: float = 5.0):
        from confluent_kafka import Consumer

        from recsys.services import Kafka

        self.topics = [str(cfg.services.kafka.topics.events), str(cfg.services.kafka.topics.impressions)]
        self.timeout = timeout
        self.client = Consumer({"bootstrap.servers": Kafka(cfg).bootstrap, "enable.auto.commit": False,
                                "group.id": group_id or cfg.features.consumer.group_id})

    def read(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> messages not yet committed by the group."""
        from confluent_kafka import TopicPartition

        metadata = self.client.list_topics(timeout=self.timeout)
        partitions = [TopicPartition(t, p) for t in self.topics if t in metadata.topics
                      for p in metadata.topics[t].partitions]
        out = {}
        for tp in self.client.committed(partitions, timeout=self.timeout):
            low, high = self.client.get_watermark_offsets(tp, timeout=self.timeout)
            committed = tp.offset if tp.offset >= 0 else low
            out[(tp.topic, tp.partition)] = max(0, high - committed)
        return out

    def close(self) -> None:
        self.client.close()


def lag(cfg, group_id: str | None = None) -> dict[tuple[str, int], int]:
    """(topic, partition) -> messages not yet committed by the consumer group."""
    probe = LagProbe(cfg, group_id)
    try:
        return probe.read()
    finally:
        probe.close()
