-- A big audience is fanned out in segments, ranges of user ids that any node may
-- claim, so that one broadcast keeps every node (and every worker) busy. A message
-- whose fan-out was split keeps no work of its own (fanout_split = 1): its remaining
-- audience is all in its segments, and it is done when the last of them is.
ALTER TABLE messages ADD COLUMN fanout_split INTEGER NOT NULL DEFAULT 0;
CREATE TABLE fanout_segments (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    start_user TEXT NOT NULL,  -- the segment holds the users after this id ...
    end_user   TEXT,           -- ... up to and with this one; NULL: to the end
    cursor     TEXT,           -- the last user planned; NULL: none yet
    owner      TEXT,
    done       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, seq)
);
CREATE INDEX fanout_segments_open ON fanout_segments(owner) WHERE done = 0;
