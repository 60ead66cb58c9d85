-- Why the risk team released or rejected a held order, as the decision said it (review_reason stays why it was
-- held): support reads who decided and why on the order's timeline. Decisions recorded before it kept none.
ALTER TABLE orders ADD COLUMN reviewed_reason text;
