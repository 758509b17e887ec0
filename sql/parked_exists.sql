-- Does publisher $1 have parked messages? (an index probe)
SELECT EXISTS (SELECT 1 FROM {schema}.parked WHERE publisher = $1) AS parked;
