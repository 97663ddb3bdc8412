-- Deliveries a node may claim: queued, unowned, sent one by one (not collected for a
-- digest), so that a claim does not walk past every collected delivery of a slot.
CREATE INDEX deliveries_claimable ON deliveries(id)
    WHERE status = 'queued' AND owner IS NULL AND mode = 'immediate';
