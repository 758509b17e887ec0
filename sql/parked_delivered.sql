-- Parked messages $1 (ids) are delivered.
DELETE FROM {schema}.parked WHERE id = ANY ($1::bigint[]);
