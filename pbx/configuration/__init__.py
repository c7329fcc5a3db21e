"""The configuration file: the server sections (``server``), the contact-center sections
(``contact_center``), callbacks and trunks (``callbacks``), and the simulator's scenario files."""
