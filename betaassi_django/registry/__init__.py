"""The session registry, kept in backend metadata beyond the assistant's own 16 keys.

A format, below its users: the publish queue's processor writes it, the embedded API's scopes read it (a key
limited to an assistant reaches its registry's threads), so it imports nothing of the app but ``metadata``.
Its modules: ``layout`` (the threads' types, keys and capacities, values chunked over keys), ``pages`` (a
bucket, ``Page``, and its overflow runs) and ``root`` (``Root``, the keyed hash and the table's growth).

Layout (all in metadata, readable by any process; the keys are a contract, docs/events.md):

- the assistant's ``betaassi_registry`` key names the registry's *root* thread;
- the root holds ``hwm`` (the last event applied), ``key`` (the registry's
  secret hash key, 32 hex digits) and ``pages``: the *bucket* head threads'
  ids, comma-separated, chunked over ``pages``, ``pages.1``... (13 keys);
- a bucket's *head* thread holds ``applied`` (the last event applied to it)
  and either its sessions, a JSON object ``{session_id: record}`` chunked over
  ``sessions``, ``sessions.1``... (14 keys, about 80 short sessions or 30 of
  the longest), or, when they do not fit, ``more``: the directory of its
  *overflow* pages, ``[[first session id, thread id], ...]`` in session-id
  order, each overflow thread holding a contiguous run of the bucket's
  sessions (15 keys).

A session lives in bucket ``blake2b(session_id, key=secret) % len(pages)``.
The secret is drawn per registry and kept in the root, so someone who can
only start sessions (and never reads the root) cannot aim ids at one bucket.
The number of buckets doubles (every session rehashed into new head threads,
switched to in one root write) when the table passes 60% full, up to 256
buckets, so buckets stay evenly filled and a small registry has few of them.
Ids that share a bucket anyway (an adversary who knows the secret, or ids
whose whole hash values collide, which doubling never separates) spill into
overflow pages: nothing valid ever overflows for good.

Bounds: a bucket holds at least 1,500 sessions of the largest size (60-character
id, 100-character model, a thread) and about 7,000 typical ones (``chat-1a2b3c4d``,
a thread) even when every one of them collides; 256 buckets hold over 10,000
typical sessions without any overflow page. Finding a session reads the root and
its bucket's head (2 reads); in an overflowed bucket, also the one overflow page
whose id range holds it (3 reads, never more). A create or update that would not
fit an overflowed bucket's directory is rejected with a reason (that takes about
1,500 ids colliding under the secret), never a stall.

Registries of the old layout (no ``key``: ``crc32(session_id)`` buckets) stay
readable; the processor rehashes one under a fresh secret on its first write.
Overflow pages are written copy-on-write (an unchanged run keeps its thread;
a changed one gets a new thread, the head switches to it in one write), so a
crash at any point leaves the head's layout whole. A change that keeps the
directory as it is (one run changed, its first id the same) rewrites that run
in place instead, with ``applied`` (one write, atomic: no thread created,
no head written, none deleted); a replay skips what the head's or a run's
``applied`` holds. Runs keep their boundaries
from one write to the next (a run past its capacity is split, runs are packed
75% full), so a change rewrites the one run it falls in, not every run after it.
"""
