-- A device registered through an order's status link gets that order's notifications only: a status link is shared
-- (screenshots, forwarded chats), and whoever holds one must not follow the user's other orders. NULL: registered by
-- the platform with a users:write key, for every order of the user. Devices registered before this migration cannot
-- be told apart and keep NULL.
ALTER TABLE push_subscriptions ADD COLUMN order_id text;
