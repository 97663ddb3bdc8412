-- Dead letters: the listing and the bulk redrive of failed deliveries walk them newest
-- change first by (updated_at, id), which is also the listing's keyset cursor.
CREATE INDEX deliveries_failed ON deliveries(updated_at, id) WHERE status = 'failed';
-- a user's digests: their export and their erasure
CREATE INDEX digests_by_user ON digests(user_id);
-- fan-outs whose cursor names a user, for the user's erasure (a new message has none)
CREATE INDEX messages_by_fanout_cursor ON messages(fanout_cursor) WHERE fanout_cursor IS NOT NULL;
