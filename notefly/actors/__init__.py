"""The actor topology: category actors fan out, channel shards deliver.

See ARCHITECTURE.md section 2: per-user channel entities live on a bounded number
of pykka shard actors, so the thread count never depends on the number of users.
"""

from notefly.actors.system import ActorSystem

__all__ = ["ActorSystem"]
