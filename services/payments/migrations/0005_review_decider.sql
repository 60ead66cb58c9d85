-- Which API key decided a risk review (issue 15): its id and, as it was named then, its name.
ALTER TABLE orders
    ADD COLUMN reviewed_by_key_id text,
    ADD COLUMN reviewed_by_key_name text;
