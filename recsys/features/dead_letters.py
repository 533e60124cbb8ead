"""Dead letters: messages that cannot be stored, kept with their reason instead of stopping a pipeline.

The consumer records each letter in Postgres once per source position (topic, partition, offset),
then produces the unpublished ones to the dead-letter topic and marks them. A batch replayed after a
crash therefore never duplicates a letter; only a crash between the broker's acknowledgement and the
marking can repeat one on the topic, and the letter's key (its letter_id) lets a reader drop it.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass
class DeadLetter:
    letter_id: str
    reason: str
    payload: bytes
    source: str = "consumer"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    user_id: str | None = None

    @staticmethod
    def id_of(message) -> str:
        """A Kafka message's letter id: where it sits on the broker."""
        return f"{message.topic()}:{message.partition()}:{message.offset()}"

    @classmethod
    def of_message(cls, message, reason: str) -> "DeadLetter":
        """A letter for a Kafka message, identified by where it sits on the broker."""
        key = (message.key() or b"").decode("utf-8", "replace")
        return cls(letter_id=cls.id_of(message), reason=reason,
                   payload=message.value() or b"", topic=message.topic(), partition=message.partition(),
                   offset=message.offset(), user_id=key)

    def as_message(self) -> dict:
        """What the dead-letter topic carries (JSON): the reason, where it came from, the payload as text."""
        return {"letter_id": self.letter_id, "reason": self.reason, "source": self.source, "topic": self.topic,
                "partition": self.partition, "offset": self.offset, "user_id": self.user_id,
                "payload": self.payload.decode("utf-8", "replace")}


def _text(value: str | None) -> str | None:
    """Reasons and keys quote bad input: keep them storable (Postgres text refuses NUL)."""
    return None if value is None else value.replace("\x00", "\\x00")


def record(conn: psycopg.Connection, letters: list[DeadLetter]) -> list[DeadLetter]:
    """Store the letters (once each) and return those not yet on the dead-letter topic."""
    if not letters:
        return []
    rows = [(l.letter_id, l.source, l.topic, l.partition, l.offset, _text(l.user_id), _text(l.reason), l.payload)
            for l in letters]
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO dead_letters (letter_id, source, topic, \"partition\", \"offset\", user_id, "
                            "reason, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
        pending = {r[0] for r in conn.execute(
            "SELECT letter_id FROM dead_letters WHERE letter_id = ANY(%s) AND NOT published",
            ([l.letter_id for l in letters],))}
    return [l for l in letters if l.letter_id in pending]


def mark_published(conn: psycopg.Connection, letters: list[DeadLetter]) -> None:
    if letters:
        conn.execute("UPDATE dead_letters SET published = true WHERE letter_id = ANY(%s)",
                     ([l.letter_id for l in letters],))
