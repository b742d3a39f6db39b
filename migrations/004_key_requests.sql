-- Keys for users (issue 14): uploads and deletions a user confirms by mail, the language of later mails, and
-- the expiry notices already sent. Runs unchanged on PostgreSQL 15+ and PGlite.

-- The language the address's owner chose (an upload's ?lang= or Accept-Language): later mails use it.
alter table lacre_identities add column lang text null check (lang ~ '^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$');

-- One mail's worth of proof: a link from the key service, or a WKS confirmation request's nonce. Only the
-- SHA-256 of the token is kept (util/secret-token.ts); the token itself lives only in the mail, encrypted to the
-- key concerned. A request is used once (used_at), and dead after expires_at (web.token_ttl_hours).
create table lacre_key_requests (
  id          bigserial primary key,
  token_hash  text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  -- publish: the pending key (email, fingerprint) becomes the address's key. delete: the address's keys go.
  action      text not null check (action in ('publish', 'delete')),
  -- How the request came: the web key service, or mail to the WKS submission address.
  channel     text not null default 'web' check (channel in ('web', 'wks')),
  email       text not null,
  fingerprint text not null check (fingerprint ~ '^[0-9A-F]{40,64}$'),
  -- What the upload asked for, applied to the identity at confirmation (null: keep).
  style       text null check (style in ('mime', 'inline')),
  lang        text null check (lang ~ '^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$'),
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  used_at     timestamptz null
);

-- "At most N confirmation mails per address per hour" counts here.
create index lacre_key_requests_by_email on lacre_key_requests (lower(email), created_at);

-- Expiry notices sent, once per key and kind: the row goes in before the mail goes out (two instances never
-- both send), and is removed again when the mail could not be sent (the next run tries again).
create table lacre_key_notices (
  email       text not null,
  fingerprint text not null check (fingerprint ~ '^[0-9A-F]{40,64}$'),
  kind        text not null check (kind in ('expiring', 'expired')),
  sent_at     timestamptz not null default now(),
  primary key (email, fingerprint, kind)
);
