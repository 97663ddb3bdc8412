-- deliveries_recent (user_id, channel, created_at) serves every lookup by user that
-- deliveries_by_user served (erasure, a user's data, throttle counts), so the older
-- index only cost a B-tree insert per delivery and its space on disk.
DROP INDEX IF EXISTS deliveries_by_user;
