"""The API's routes, one router per area (models, requests, jobs, events, audit), and what they share: the
engine state the app carries, a database session per request, and the bodies a request may send."""
