-- Demo table for docker-compose.yml (run by the postgres image on first start).
CREATE TABLE IF NOT EXISTS public.orders (
    id         bigserial PRIMARY KEY,
    customer   text        NOT NULL,
    amount     numeric(10, 2) NOT NULL,
    status     text        NOT NULL DEFAULT 'new',
    updated_at timestamptz NOT NULL DEFAULT now()
);
