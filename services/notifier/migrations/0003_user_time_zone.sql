-- The user's IANA time zone (Asia/Taipei), next to their locale: times in messages are shown in it.
-- NULL: unknown, and times are shown in UTC, labelled as such.
ALTER TABLE user_preferences ADD COLUMN time_zone text;
