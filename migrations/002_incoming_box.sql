-- The Incoming Box (docs/incoming-box.md): users, their tokens, blob metadata and per-user usage.
-- Runs unchanged on PostgreSQL 15+ and PGlite.

-- Address -> box user. Domain lower-cased, local part as given (lookups decide case sensitivity).
-- Several addresses (aliases) may name one user.
create table lacre_box_users (
  email      text primary key check (email like '_%@_%'),
  user_uuid  uuid not null,
  created_at timestamptz not null default now()
);

create index lacre_box_users_email_lower on lacre_box_users (lower(email));
create index lacre_box_users_user on lacre_box_users (user_uuid);

-- Per-user tokens for /blobs/{user}/…: only the SHA-256 of the token is kept (hex).
create table lacre_box_tokens (
  token_hash text primary key check (token_hash ~ '^[0-9a-f]{64}$'),
  user_uuid  uuid not null,
  created_at timestamptz not null default now()
);

create index lacre_box_tokens_user on lacre_box_tokens (user_uuid);

-- Blob metadata. The bytes live in the blob storage under file_name (unique per write, so a
-- re-upload after a delete never collides with the old file being removed).
create table lacre_blobs (
  user_uuid        uuid not null,
  namespace        text not null check (namespace ~ '^[A-Za-z0-9_-]{1,64}$'),
  blob_id          text not null check (blob_id ~ '^[A-Za-z0-9_.-]{1,128}$'),
  size             bigint not null check (size >= 0),
  scheme           text not null default 'raw',
  state            text not null default 'PENDING' check (state in ('PENDING', 'PROCESSING', 'PROCESSED', 'FAILED')),
  file_name        text not null,
  created_at       timestamptz not null default now(),
  reserved_at      timestamptz null,
  -- SHA-256 (hex) of the current reservation token while PROCESSING.
  reservation_hash text null,
  failed_version   text null,
  -- FAILED with PERMANENT (the flag list is the state plus PERMANENT when this is set).
  failed_permanent boolean not null default false,
  -- When the client finished with it: marked PROCESSED or FAILED. The purge's retention counts from here.
  processed_at     timestamptz null,
  primary key (user_uuid, namespace, blob_id)
);

-- Serves every listing (state filter, oldest/newest first, size_limit) as an index-only scan.
create index lacre_blobs_listing on lacre_blobs (user_uuid, namespace, state, created_at, blob_id) include (size);
-- The purge: PROCESSED / permanently FAILED blobs by age.
create index lacre_blobs_purge on lacre_blobs (state, processed_at) where state in ('PROCESSED', 'FAILED');

-- Bytes stored per user, kept by triggers on lacre_blobs; its row is also the per-user lock that makes
-- "check quota, then insert" race-free (lacre_box_store_blob).
create table lacre_box_usage (
  user_uuid  uuid primary key,
  used_bytes bigint not null default 0
);

create function lacre_box_usage_after_insert() returns trigger
language plpgsql as $$
begin
  insert into lacre_box_usage (user_uuid, used_bytes) values (new.user_uuid, new.size)
    on conflict (user_uuid) do update set used_bytes = lacre_box_usage.used_bytes + excluded.used_bytes;
  return null;
end
$$;

create trigger lacre_blobs_usage_insert
  after insert on lacre_blobs
  for each row execute function lacre_box_usage_after_insert();

-- Per statement, so a purge of thousands of blobs updates each user's row once.
create function lacre_box_usage_after_delete() returns trigger
language plpgsql as $$
begin
  update lacre_box_usage u
     set used_bytes = u.used_bytes - d.total
    from (select user_uuid, sum(size)::bigint as total from deleted_blobs group by user_uuid) d
   where u.user_uuid = d.user_uuid;
  return null;
end
$$;

create trigger lacre_blobs_usage_delete
  after delete on lacre_blobs
  referencing old table as deleted_blobs
  for each statement execute function lacre_box_usage_after_delete();

-- Inserts one blob's metadata unless the id exists ('exists') or the user's usage plus p_size would pass
-- p_limit ('quota'; p_limit 0 = no limit). The user's usage row is locked first, so concurrent writes for
-- one user are checked one after the other. Returns 'stored', 'exists' or 'quota'.
create function lacre_box_store_blob(
  p_user uuid, p_namespace text, p_blob_id text, p_size bigint, p_scheme text, p_file_name text, p_limit bigint
) returns text
language plpgsql as $$
declare
  v_used bigint;
begin
  insert into lacre_box_usage (user_uuid) values (p_user) on conflict (user_uuid) do nothing;
  select used_bytes into v_used from lacre_box_usage where user_uuid = p_user for update;
  if exists (select 1 from lacre_blobs where user_uuid = p_user and namespace = p_namespace and blob_id = p_blob_id) then
    return 'exists';
  end if;
  if p_limit > 0 and v_used + p_size > p_limit then
    return 'quota';
  end if;
  insert into lacre_blobs (user_uuid, namespace, blob_id, size, scheme, file_name)
    values (p_user, p_namespace, p_blob_id, p_size, p_scheme, p_file_name);
  return 'stored';
end
$$;
