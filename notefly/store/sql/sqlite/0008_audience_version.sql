-- A count of the changes to what a fan-out page is planned from: the subscriptions,
-- their users and the endpoints those registered. A page read and planned outside
-- the write lock is written only if the count has not moved since it was read (and
-- planned again under the lock otherwise), so a user erased or unsubscribed between
-- the two never gets a delivery or an inbox entry planned from the old rows.
CREATE TABLE audience_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO audience_version (id, n) VALUES (1, 0);
CREATE TRIGGER audience_subscription_added AFTER INSERT ON subscriptions
BEGIN UPDATE audience_version SET n = n + 1; END;
CREATE TRIGGER audience_subscription_changed AFTER UPDATE ON subscriptions
BEGIN UPDATE audience_version SET n = n + 1; END;
CREATE TRIGGER audience_subscription_removed AFTER DELETE ON subscriptions
BEGIN UPDATE audience_version SET n = n + 1; END;
CREATE TRIGGER audience_user_changed AFTER UPDATE ON users
BEGIN UPDATE audience_version SET n = n + 1; END;
CREATE TRIGGER audience_user_removed AFTER DELETE ON users
BEGIN UPDATE audience_version SET n = n + 1; END;
CREATE TRIGGER audience_endpoint_added AFTER INSERT ON endpoints
BEGIN UPDATE audience_version SET n = n + 1; END;
CREATE TRIGGER audience_endpoint_changed AFTER UPDATE ON endpoints
BEGIN UPDATE audience_version SET n = n + 1; END;
CREATE TRIGGER audience_endpoint_removed AFTER DELETE ON endpoints
BEGIN UPDATE audience_version SET n = n + 1; END;
