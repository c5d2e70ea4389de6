"""The seed's chat client (shared/seed/000_39c55adafcf715dd.txt), verbatim, plus a tiny CLI so
Rust tests can make the real seed write to a test Redis.

Usage: seed_chat.py PORT OPERATION ARGS...   (user ids are JSON: 1001 is an int, '"abc"' a str)
  send ROOM USER_ID USERNAME CONTENT
  dm USER1_ID USER2_ID FROM_USER_ID FROM_USERNAME CONTENT
  join ROOM USER_ID USERNAME
  leave ROOM USER_ID USERNAME
  typing USER_ID ROOM
  read USER_ID ROOM LAST_READ_ID
Set SEED_UTCNOW=2026-11-27T20:12:21 to pin datetime.utcnow() (e.g. to a zero microsecond).
"""
import json
import os
import sys
import uuid
from datetime import datetime

import redis

r = None  # the seed's module-global client, set by main()


# --- the seed, verbatim -------------------------------------------------------------------------

def create_message(user_id, username, content, room=None):
    return {
        'id': str(uuid.uuid4()),
        'user_id': user_id,
        'username': username,
        'content': content,
        'room': room,
        'timestamp': datetime.utcnow().isoformat(),
        'type': 'message'
    }


class ChatRoom:
    def __init__(self, redis_client, room_name):
        self.r = redis_client
        self.room = room_name
        self.channel = f"chat:room:{room_name}"
        self.members_key = f"chat:room:{room_name}:members"

    def join(self, user_id, username):
        # Add to room members
        self.r.sadd(self.members_key, user_id)

        # Announce join
        self.r.publish(self.channel, json.dumps({
            'type': 'system',
            'content': f"{username} joined the room",
            'timestamp': datetime.utcnow().isoformat()
        }))

    def leave(self, user_id, username):
        self.r.srem(self.members_key, user_id)

        self.r.publish(self.channel, json.dumps({
            'type': 'system',
            'content': f"{username} left the room",
            'timestamp': datetime.utcnow().isoformat()
        }))

    def send_message(self, user_id, username, content):
        message = create_message(user_id, username, content, self.room)

        # Publish to real-time listeners
        self.r.publish(self.channel, json.dumps(message))

        # Store for history (last 1000 messages)
        history_key = f"chat:room:{self.room}:history"
        self.r.lpush(history_key, json.dumps(message))
        self.r.ltrim(history_key, 0, 999)

    def get_history(self, count=50):
        messages = self.r.lrange(
            f"chat:room:{self.room}:history", 0, count-1
        )
        return [json.loads(m) for m in messages]

    def get_members(self):
        return self.r.smembers(self.members_key)


class DirectMessage:
    def __init__(self, redis_client, user1_id, user2_id):
        self.r = redis_client
        # Always sort IDs for consistent channel name
        ids = sorted([user1_id, user2_id])
        self.channel = f"chat:dm:{ids[0]}:{ids[1]}"
        self.history_key = f"chat:dm:{ids[0]}:{ids[1]}:history"

    def send(self, from_user_id, from_username, content):
        message = create_message(from_user_id, from_username, content)

        self.r.publish(self.channel, json.dumps(message))
        self.r.lpush(self.history_key, json.dumps(message))
        self.r.ltrim(self.history_key, 0, 499)

    def get_history(self, count=50):
        messages = self.r.lrange(self.history_key, 0, count-1)
        return [json.loads(m) for m in messages]


def send_typing_indicator(user_id, room):
    r.publish(f"chat:room:{room}", json.dumps({
        'type': 'typing',
        'user_id': user_id,
        'timestamp': datetime.utcnow().isoformat()
    }))


def mark_messages_read(user_id, room, last_read_id):
    r.hset(f"chat:room:{room}:read_receipts", user_id, last_read_id)
    r.publish(f"chat:room:{room}", json.dumps({
        'type': 'read_receipt',
        'user_id': user_id,
        'last_read': last_read_id
    }))


# --- the test driver ----------------------------------------------------------------------------

def pin_utcnow(iso):
    """Replaces the module's `datetime` so `datetime.utcnow()` returns a fixed instant."""
    global datetime
    fixed = datetime.fromisoformat(iso)

    class PinnedDatetime(datetime):
        @classmethod
        def utcnow(cls):
            return fixed

    datetime = PinnedDatetime


def main(argv):
    global r
    port, op, args = int(argv[1]), argv[2], argv[3:]
    if os.environ.get("SEED_UTCNOW"):
        pin_utcnow(os.environ["SEED_UTCNOW"])
    r = redis.Redis(host="127.0.0.1", port=port)
    uid = json.loads
    if op == "send":
        room, user_id, username, content = args
        ChatRoom(r, room).send_message(uid(user_id), username, content)
    elif op == "dm":
        user1, user2, from_id, from_name, content = args
        DirectMessage(r, uid(user1), uid(user2)).send(uid(from_id), from_name, content)
    elif op == "join":
        room, user_id, username = args
        ChatRoom(r, room).join(uid(user_id), username)
    elif op == "leave":
        room, user_id, username = args
        ChatRoom(r, room).leave(uid(user_id), username)
    elif op == "typing":
        user_id, room = args
        send_typing_indicator(uid(user_id), room)
    elif op == "read":
        user_id, room, last_read = args
        mark_messages_read(uid(user_id), room, last_read)
    else:
        sys.exit(f"unknown operation {op!r}")


if __name__ == "__main__":
    main(sys.argv)
