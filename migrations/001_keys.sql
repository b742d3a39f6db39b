-- Recipients and their OpenPGP public keys. Runs unchanged on PostgreSQL 15 and PGlite.

-- One row per recipient address: domain lower-cased, local part as given (lookups decide case sensitivity).
create table lacre_identities (
  email      text primary key check (email like '_%@_%'),
  style      text not null default 'mime' check (style in ('mime', 'inline')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index lacre_identities_email_lower on lacre_identities (lower(email));

-- Armored public keys (never secret keys). The same key may serve several addresses.
create table lacre_keys (
  id          bigserial primary key,
  email       text not null references lacre_identities (email) on delete cascade on update cascade,
  fingerprint text not null check (fingerprint ~ '^[0-9A-F]{40,64}$'),
  armored     text not null,
  status      text not null default 'confirmed' check (status in ('pending', 'confirmed', 'disabled')),
  expires_at  timestamptz null,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  unique (email, fingerprint)
);

create index lacre_keys_email_lower on lacre_keys (lower(email));
create index lacre_keys_fingerprint on lacre_keys (fingerprint);

-- Key caches (src/keys/directory.ts) listen on this channel and drop what they hold.
create function lacre_notify_keys_changed() returns trigger
language plpgsql as $$
begin
  if tg_op = 'DELETE' then
    perform pg_notify('lacre_keys_changed', old.email);
  else
    perform pg_notify('lacre_keys_changed', new.email);
  end if;
  return null;
end
$$;

create trigger lacre_identities_changed
  after insert or update or delete on lacre_identities
  for each row execute function lacre_notify_keys_changed();

create trigger lacre_keys_changed
  after insert or update or delete on lacre_keys
  for each row execute function lacre_notify_keys_changed();
