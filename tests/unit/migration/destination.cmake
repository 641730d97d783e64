# Destination-side tests of the migration module: receiver, image store, receive sessions.
procmig_test(migration_receiver_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/receiver_test.cc
             LIBS procmig_migration LABEL component TIMEOUT 60)
procmig_test(migration_receive_session_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/receive_session_test.cc
             LIBS procmig_migration LABEL component TIMEOUT 60)
procmig_test(migration_image_manifest_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/image_manifest_test.cc
             LIBS procmig_migration LABEL unit TIMEOUT 30)
procmig_test(migration_block_memory_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/block_memory_test.cc
             LIBS procmig_migration LABEL unit TIMEOUT 30)
procmig_test(migration_image_writer_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/image_writer_test.cc
             LIBS procmig_migration LABEL component TIMEOUT 60)
procmig_test(migration_file_run_writer_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/file_run_writer_test.cc
             LIBS procmig_migration LABEL unit TIMEOUT 30)
