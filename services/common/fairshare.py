"""A ROUTER's fair share per peer: a flooding peer waits in its own queue, the others are served.

libzmq reads a ROUTER's peers round-robin, so a flooding peer gets its share of a turn
and no more: PER_PEER_PER_TURN of its messages are answered in full, what it sent beyond
waits for the next turn, served first (at most MAX_DEFERRED; past them, its messages are
answered as over its share, which may mean not even checked). A peer that waits for each
reply, however fast, is never over its share.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeVar

import zmq

from services.common import protocol

MESSAGES_PER_TURN = 256
"""Messages read from one socket per turn, so no socket starves the others."""
PER_PEER_PER_TURN = 16
"""Requests answered per peer per turn; its others wait for the next turn."""
MAX_DEFERRED = 16
"""Messages of one peer waiting for a later turn; past them, its others are answered as over its
share (a publish refused unchecked, a history request dropped): a peer that far ahead is not
waiting for answers."""
T = TypeVar("T")
Answer = Callable[[list[bytes], bool], protocol.Message | None]
"""A request's frames, and whether its peer is past its share of the turn → the reply, if any."""


class FairShare:
    """The messages each ROUTER's peers sent beyond their share of a turn, for the next."""

    def __init__(self) -> None:
        self.deferred: dict[zmq.Socket[bytes], dict[bytes, deque[list[bytes]]]] = {}

    def serve(self, sock: zmq.Socket[bytes], answer: Answer) -> None:
        """Answer what is queued on `sock`, at most PER_PEER_PER_TURN messages of each peer in full."""
        served: dict[bytes, int] = {}
        waiting = self.deferred.setdefault(sock, {})
        for routing_id, queue in list(waiting.items()):
            while queue and served.get(routing_id, 0) < PER_PEER_PER_TURN:
                served[routing_id] = served.get(routing_id, 0) + 1
                _reply(sock, routing_id, answer(queue.popleft(), False))
            if not queue:
                del waiting[routing_id]
        for routing_id, *frames in queued(sock.recv_multipart):
            if served.get(routing_id, 0) < PER_PEER_PER_TURN:
                served[routing_id] = served.get(routing_id, 0) + 1
                _reply(sock, routing_id, answer(frames, False))
                continue
            queue = waiting.setdefault(routing_id, deque())
            if len(queue) < MAX_DEFERRED:
                queue.append(frames)
            else:
                _reply(sock, routing_id, answer(frames, True))

    def waiting(self, sock: zmq.Socket[bytes]) -> bool:
        """Whether messages on `sock` wait for a later turn (the next one then starts at once)."""
        return bool(self.deferred.get(sock))


def queued(recv: Callable[[int], T]) -> Iterator[T]:
    """What a socket has queued, at most MESSAGES_PER_TURN, without waiting: `recv` is its recv method."""
    for _ in range(MESSAGES_PER_TURN):
        try:
            message = recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        yield message


def _reply(sock: zmq.Socket[bytes], routing_id: bytes, message: protocol.Message | None) -> None:
    if message is not None:
        with contextlib.suppress(zmq.Again):  # a peer that does not read loses its replies
            sock.send_multipart([routing_id, *protocol.encode(message)], zmq.NOBLOCK)
