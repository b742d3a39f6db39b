-- The Incoming Box speaks with Soledad's own client (docs/incoming-box.md, "Soledad clients").
-- Runs unchanged on PostgreSQL 15+ and PGlite.

-- The stored bytes start with Soledad's framing, base64url(preamble) + ' ', as a delivery through
-- PUT /incoming is stored from this version on. Blobs stored before, and users' own uploads (PUT /blobs),
-- are kept exactly as they were sent: false.
alter table lacre_blobs add column framed boolean not null default false;

-- The credential (the SHA-256 of the user token it authenticated with, as in lacre_box_tokens) that reserved
-- the blob with POST ["PROCESSING"], Soledad's way; null when it was reserved with POST …/reserve (then
-- reservation_hash holds the reservation) or is not reserved.
alter table lacre_blobs add column reserved_by text null check (reserved_by ~ '^[0-9a-f]{64}$');

-- Lacre named Soledad's incoming namespace "mx"; Soledad's client asks for "MX" (namespaces are
-- case-sensitive). The files move from {user}/mx/ to {user}/MX/ when the box next starts, before its orphan
-- sweep. A blob whose id already exists in MX (only possible if both spellings were used) stays in mx.
update lacre_blobs b set namespace = 'MX'
 where namespace = 'mx'
   and not exists (select 1 from lacre_blobs m where m.user_uuid = b.user_uuid and m.namespace = 'MX' and m.blob_id = b.blob_id);

-- Listings without filter_flag (every blob of a namespace, by arrival) as an index-only scan; with a state
-- filter too, when most of the namespace is in that state (the planner picks this or lacre_blobs_listing).
create index lacre_blobs_by_date on lacre_blobs (user_uuid, namespace, created_at, blob_id) include (size, state);

-- 002's lacre_box_store_blob, recording whether the stored bytes are framed: one statement, so a blob is never
-- visible with the wrong mark.
create function lacre_box_store_blob(
  p_user uuid, p_namespace text, p_blob_id text, p_size bigint, p_scheme text, p_file_name text, p_limit bigint, p_framed boolean
) returns text
language plpgsql as $$
declare
  v_outcome text;
begin
  v_outcome := lacre_box_store_blob(p_user, p_namespace, p_blob_id, p_size, p_scheme, p_file_name, p_limit);
  if v_outcome = 'stored' and p_framed then
    update lacre_blobs set framed = true where user_uuid = p_user and namespace = p_namespace and blob_id = p_blob_id;
  end if;
  return v_outcome;
end
$$;
