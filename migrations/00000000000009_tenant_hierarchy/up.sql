-- The tenant tree as a closure table: one row per (ancestor, descendant) pair, the tenant itself
-- included at depth 0. IsDescendant and a tenant's ancestors are one indexed lookup each, never a
-- walk up `parent_id`. Triggers keep it true on insert and on re-parenting, inside the statement
-- that changes `tenants`, so no writer can forget it.
--
-- Soft-deleted tenants keep their rows (audit events, memberships and sessions point at them).
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('active', 'blocked', 'deleted'));

CREATE TABLE tenant_closure (
    ancestor_id   uuid    NOT NULL,
    descendant_id uuid    NOT NULL,
    depth         integer NOT NULL,
    CONSTRAINT tenant_closure_pkey PRIMARY KEY (ancestor_id, descendant_id),
    CONSTRAINT tenant_closure_ancestor_id_fkey FOREIGN KEY (ancestor_id) REFERENCES tenants (id),
    CONSTRAINT tenant_closure_descendant_id_fkey FOREIGN KEY (descendant_id)
        REFERENCES tenants (id),
    CONSTRAINT tenant_closure_depth_check CHECK (depth >= 0),
    CONSTRAINT tenant_closure_self CHECK ((depth = 0) = (ancestor_id = descendant_id))
);
-- Ancestors of a tenant, nearest first.
CREATE INDEX tenant_closure_descendant_idx ON tenant_closure (descendant_id, depth);
-- Listing children by parent, in id order.
DROP INDEX tenants_parent_id_idx;
CREATE INDEX tenants_parent_id_idx ON tenants (parent_id, id) WHERE parent_id IS NOT NULL;

-- The roots of the effectively blocked subtrees: blocked or deleted tenants.
DROP INDEX tenants_blocked_idx;
CREATE INDEX tenants_blocked_idx ON tenants (id) WHERE status <> 'active';

-- Existing trees (parents always precede children: a parent must exist first).
INSERT INTO tenant_closure (ancestor_id, descendant_id, depth)
WITH RECURSIVE up (ancestor_id, descendant_id, depth) AS (
    SELECT id, id, 0 FROM tenants
    UNION ALL
    SELECT t.parent_id, up.descendant_id, up.depth + 1
      FROM up JOIN tenants t ON t.id = up.ancestor_id
     WHERE t.parent_id IS NOT NULL
)
SELECT ancestor_id, descendant_id, depth FROM up;

-- Inserts share, and moves take exclusively, one transaction-scoped advisory lock: a move reads
-- the subtree it carries, so a child inserted under it meanwhile must wait (or it would keep
-- the old ancestors), and two moves must not each miss the cycle the other makes.
CREATE FUNCTION iam_tenant_tree_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT 7305176012496140617::bigint $$;

CREATE FUNCTION iam_tenant_closure_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(iam_tenant_tree_lock_key());
    INSERT INTO tenant_closure (ancestor_id, descendant_id, depth)
    SELECT NEW.id, NEW.id, 0
    UNION ALL
    SELECT c.ancestor_id, NEW.id, c.depth + 1
      FROM tenant_closure c
     WHERE c.descendant_id = NEW.parent_id;
    RETURN NULL;
END
$$;

-- The lock is taken BEFORE the row goes in, ahead of the foreign-key check's lock on the parent
-- row: a move takes the tree lock first and the moved row's lock second, so the two orders
-- agree and a child's insert cannot deadlock with a move of its parent.
CREATE FUNCTION iam_tenant_tree_lock_shared() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(iam_tenant_tree_lock_key());
    RETURN NEW;
END
$$;

CREATE FUNCTION iam_tenant_tree_lock_exclusive() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(iam_tenant_tree_lock_key());
    RETURN NEW;
END
$$;

CREATE TRIGGER tenants_tree_lock_insert BEFORE INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION iam_tenant_tree_lock_shared();

CREATE TRIGGER tenants_closure_insert AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION iam_tenant_closure_insert();

-- Re-parenting: the subtree's links to its old ancestors go, links to the new ones come. A new
-- parent inside the subtree (the tenant itself or one of its descendants) would close a cycle
-- and is refused; the adapter checks first and answers without an error, this is the backstop.
CREATE FUNCTION iam_tenant_closure_move() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(iam_tenant_tree_lock_key());
    IF NEW.parent_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM tenant_closure
         WHERE ancestor_id = NEW.id AND descendant_id = NEW.parent_id
    ) THEN
        RAISE EXCEPTION 'moving tenant % under % would make a cycle', NEW.id, NEW.parent_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenants_no_cycle';
    END IF;
    DELETE FROM tenant_closure link
     USING tenant_closure sub
     WHERE sub.ancestor_id = NEW.id
       AND link.descendant_id = sub.descendant_id
       AND link.depth > sub.depth;
    INSERT INTO tenant_closure (ancestor_id, descendant_id, depth)
    SELECT above.ancestor_id, sub.descendant_id, above.depth + sub.depth + 1
      FROM tenant_closure above
      JOIN tenant_closure sub ON sub.ancestor_id = NEW.id
     WHERE above.descendant_id = NEW.parent_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenants_tree_lock_move BEFORE UPDATE OF parent_id ON tenants
    FOR EACH ROW WHEN (OLD.parent_id IS DISTINCT FROM NEW.parent_id)
    EXECUTE FUNCTION iam_tenant_tree_lock_exclusive();

CREATE TRIGGER tenants_closure_move AFTER UPDATE OF parent_id ON tenants
    FOR EACH ROW WHEN (OLD.parent_id IS DISTINCT FROM NEW.parent_id)
    EXECUTE FUNCTION iam_tenant_closure_move();
