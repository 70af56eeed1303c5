-- Every lowered first and last name tickets have held: a superset of the
-- tickets' names (a name is never removed), kept by a statement trigger, so every
-- writer keeps it, bulk seeds included. A name filter too short for a trigram
-- (one or two characters) first reads the matching names here: none means no
-- ticket matches, without walking the tickets; a few become an equality the
-- trigram indexes answer. The table holds distinct names, far fewer than tickets.
CREATE TABLE ticket_names (
    field text NOT NULL CHECK (field IN ('first', 'last')),
    name  text NOT NULL,
    PRIMARY KEY (field, name)
);

INSERT INTO ticket_names (field, name)
SELECT 'first', lower(first_name) FROM tickets
UNION
SELECT 'last', lower(last_name) FROM tickets;

CREATE FUNCTION ticket_names_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ticket_names (field, name)
    SELECT 'first', lower(first_name) FROM new_tickets
    UNION
    SELECT 'last', lower(last_name) FROM new_tickets
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER ticket_names_on_insert AFTER INSERT ON tickets
    REFERENCING NEW TABLE AS new_tickets
    FOR EACH STATEMENT EXECUTE FUNCTION ticket_names_keep();
-- Names are not changed by the service; a hand-written UPDATE of them is covered
-- row by row (a transition table cannot go with a column list).
CREATE FUNCTION ticket_names_keep_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ticket_names (field, name)
    VALUES ('first', lower(NEW.first_name)), ('last', lower(NEW.last_name))
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER ticket_names_on_update AFTER UPDATE OF first_name, last_name ON tickets
    FOR EACH ROW EXECUTE FUNCTION ticket_names_keep_row();
