-- A claim is marked with its session's backend pid and, from here on, the session's start: a pid alone repeats
-- (PostgreSQL restarted in a container numbers its backends from the same small pids), and a row claimed by a
-- session that died was then taken for a live session's claim for as long as a new session with that pid lived:
-- never published. Rows claimed before this column (NULL) are judged by their pid alone, as before.
ALTER TABLE outbox ADD COLUMN claimed_session timestamptz;
