-- Deliveries a node may claim: queued, unowned, sent one by one (not collected for a
-- digest). Claims run every poll; through deliveries_queued they walked past every
-- collected delivery of a digest slot first (100,000 users: 300,000 rows a claim).
CREATE INDEX deliveries_claimable ON deliveries(id)
    WHERE status = 'queued' AND owner IS NULL AND mode = 'immediate';
ANALYZE;
