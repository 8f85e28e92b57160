"""Hidden checks, one pytest file per lesson. Instructor-only: never in a learner bundle."""
