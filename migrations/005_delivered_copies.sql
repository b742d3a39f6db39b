-- Exactly once where it can be (issue 15): each copy a downstream accepted, recorded right after its 250 (or
-- the Incoming Box's 200/409), so that a message Postfix retries (Lacre answered 4xx, or died before answering)
-- does not send that copy again. Runs unchanged on PostgreSQL 15+ and PGlite.
create table lacre_delivered_copies (
  -- Postfix's queue id: XFORWARD IDENT, else the topmost Received field Postfix wrote. It stays the same when
  -- Postfix retries the message.
  queue_id     text not null,
  recipient    text not null,
  -- SHA-256 (hex) of the message's header section as received: it holds Postfix's Received field (queue id and
  -- time) and the Message-ID, so a reused queue id never matches an older message.
  digest       text not null check (digest ~ '^[0-9a-f]{64}$'),
  delivered_at timestamptz not null default now(),
  primary key (queue_id, recipient, digest)
);

-- The purge (relay.delivered_retention_hours) removes the oldest rows.
create index lacre_delivered_copies_by_time on lacre_delivered_copies (delivered_at);
