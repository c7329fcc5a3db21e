-- One database per site until multi-site operation shares one (see deploy/centralita/*.yaml).
CREATE DATABASE centralita_madrid OWNER centralita;
CREATE DATABASE centralita_bogota OWNER centralita;
