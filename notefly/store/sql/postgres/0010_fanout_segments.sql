-- A big audience is fanned out in segments, ranges of user ids that any node may
-- claim, so that one broadcast keeps every node (and every worker) busy. A message
-- whose fan-out was split keeps no work of its own (fanout_split): its remaining
-- audience is all in its segments, and it is done when the last of them is.
ALTER TABLE messages ADD COLUMN fanout_split boolean NOT NULL DEFAULT false;
CREATE TABLE fanout_segments (
    message_id text COLLATE "C" NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    start_user text COLLATE "C" NOT NULL,  -- the segment holds the users after this id ...
    end_user   text COLLATE "C",           -- ... up to and with this one; NULL: to the end
    cursor     text COLLATE "C",           -- the last user planned; NULL: none yet
    owner      text COLLATE "C",
    done       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (message_id, seq)
);
CREATE INDEX fanout_segments_open ON fanout_segments(owner) WHERE NOT done;
